"""``AsyncLimiter.reserve()`` is an awaitable async context manager: every form of using it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, assert_type

import pytest
from _helpers import held_nano, spent_nano
from structlog.testing import capture_logs

from prism_limiter import AsyncLimiter, AsyncReservation, BudgetExceeded, Policy

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["gpt-4o-mini"]
default_max_output_tokens = 100
[[projects.p.budgets]]
id = "b"
usd = 0.001
"""
)
TOO_BIG = 10_000  # tokens: $0.0015 of gpt-4o-mini input, over the $0.001 cap


def _run(redis_url: str, body: Callable[[AsyncLimiter], Awaitable[None]]) -> None:
    async def main() -> None:
        async with AsyncLimiter.from_url(redis_url) as lim:
            await lim.apply_policy(POLICY)
            await body(lim)

    asyncio.run(main())


def test_async_with_reserve_enters_the_reservation(redis_url: str, rclient: Any) -> None:
    """``async with lim.reserve(...) as r``: the hold is taken on enter; r settles it."""

    async def body(lim: AsyncLimiter) -> None:
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100) as r:
            assert_type(r, AsyncReservation)
            assert isinstance(r, AsyncReservation) and r.open
            assert held_nano(rclient, "p", "b") == round(r.decision.hold_usd * 1e9)
            s = await r.settle(input_tokens=90, output_tokens=10)
        assert not r.open and s.first
        assert spent_nano(rclient, "p", "b") == round(s.cost_usd * 1e9)

    _run(redis_url, body)
    assert held_nano(rclient, "p", "b") == 0


def test_async_with_reserve_exits_as_the_reservation_does(redis_url: str, rclient: Any) -> None:
    """Leaving the new form by an exception releases; leaving it cleanly charges the estimate."""

    async def body(lim: AsyncLimiter) -> None:
        with pytest.raises(RuntimeError, match="the LLM call failed"):
            async with lim.reserve("p", "gpt-4o-mini", est_tokens=100) as r:
                raise RuntimeError("the LLM call failed")
        assert not r.open and spent_nano(rclient, "p", "b") == 0
        with capture_logs() as logs:
            async with lim.reserve("p", "gpt-4o-mini", est_tokens=100) as r:
                pass
        assert [e["event"] for e in logs] == ["prism.settle.estimate_charged"]
        assert spent_nano(rclient, "p", "b") == round(r.decision.hold_usd * 1e9)

    _run(redis_url, body)
    assert held_nano(rclient, "p", "b") == 0


def test_await_reserve_and_async_with_await_still_work(redis_url: str, rclient: Any) -> None:
    """``r = await lim.reserve(...)`` gives the reservation; ``async with await`` scopes it."""

    async def body(lim: AsyncLimiter) -> None:
        r = await lim.reserve("p", "gpt-4o-mini", est_tokens=100)
        assert_type(r, AsyncReservation)
        assert r.open
        await r.release()
        async with await lim.reserve("p", "gpt-4o-mini", est_tokens=100) as r2:
            assert_type(r2, AsyncReservation)
            await r2.settle(input_tokens=100, output_tokens=0)
        assert not r2.open

    _run(redis_url, body)
    assert held_nano(rclient, "p", "b") == 0


def test_a_call_runs_as_a_task(redis_url: str, rclient: Any) -> None:
    """reserve() is a coroutine too: asyncio.create_task runs it, and the task's result is the
    reservation; awaiting the call after that raises instead of reserving again."""

    async def body(lim: AsyncLimiter) -> None:
        call = lim.reserve("p", "gpt-4o-mini", est_tokens=100)
        r = await asyncio.create_task(call)
        assert isinstance(r, AsyncReservation) and r.open
        with pytest.raises(RuntimeError, match="already awaited"):
            await call
        await r.release()

    _run(redis_url, body)
    assert held_nano(rclient, "p", "b") == 0


def test_denial_raises_from_await_and_from_enter(redis_url: str, rclient: Any) -> None:
    """A denied reserve raises BudgetExceeded on await and on ``__aenter__``; the block never
    runs and nothing is held."""
    entered = False

    async def body(lim: AsyncLimiter) -> None:
        nonlocal entered
        with pytest.raises(BudgetExceeded) as awaited:
            await lim.reserve("p", "gpt-4o-mini", est_tokens=TOO_BIG)
        with pytest.raises(BudgetExceeded) as entering:
            async with lim.reserve("p", "gpt-4o-mini", est_tokens=TOO_BIG):
                entered = True
        for exc in (awaited.value, entering.value):
            assert exc.decision.budget == "b" and not exc.decision.allowed

    _run(redis_url, body)
    assert not entered
    assert held_nano(rclient, "p", "b") == 0


def test_try_reserve_returns_the_denial_in_both_forms(redis_url: str) -> None:
    """try_reserve is awaited or entered the same way, and hands a denial back unraised."""

    async def body(lim: AsyncLimiter) -> None:
        r = await lim.try_reserve("p", "gpt-4o-mini", est_tokens=TOO_BIG)
        assert not r.allowed and r.decision.reason == "budget"
        async with lim.try_reserve("p", "gpt-4o-mini", est_tokens=TOO_BIG) as r2:
            assert_type(r2, AsyncReservation)
            assert not r2.allowed and not r2.open
        async with lim.try_reserve("p", "gpt-4o-mini", est_tokens=100) as r3:
            assert r3.allowed
            await r3.release()

    _run(redis_url, body)


def test_a_call_is_awaited_once(redis_url: str, rclient: Any) -> None:
    """Awaiting one reserve() call twice, or entering it after awaiting, raises RuntimeError and
    takes no second hold."""

    async def body(lim: AsyncLimiter) -> None:
        call = lim.reserve("p", "gpt-4o-mini", est_tokens=100)
        r = await call
        with pytest.raises(RuntimeError, match="already awaited"):
            await call
        with pytest.raises(RuntimeError, match="already awaited"):
            async with call:
                pass
        assert held_nano(rclient, "p", "b") == round(r.decision.hold_usd * 1e9)
        await r.release()

    _run(redis_url, body)


def test_a_call_never_awaited_takes_nothing_and_warns(redis_url: str, rclient: Any) -> None:
    """A forgotten ``await`` holds nothing, and Python says the reserve was never awaited."""

    async def body(lim: AsyncLimiter) -> None:
        with pytest.warns(RuntimeWarning, match="never awaited"):
            lim.reserve("p", "gpt-4o-mini", est_tokens=100)  # dropped at once (refcounting)
        assert held_nano(rclient, "p", "b") == 0

    _run(redis_url, body)
