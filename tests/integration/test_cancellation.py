"""Cancellation: hundreds of asyncio tasks cancelled mid-flight leak no hold and no slot.

The focused tests cancel by progress: a probe in the limiter's I/O cancels the caller as its
script is sent, i.e. while it is in flight.
"""

from __future__ import annotations

import asyncio
import random
from contextvars import ContextVar
from typing import Any

import pytest
from _helpers import audit, budget_fields, held_nano, spent_nano

from prism_limiter import AsyncLimiter, Policy
from prism_limiter._protocol import Request, Script

POLICY = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "b"
usd = 1000
[[projects.p.rate_limits]]
id = "slots"
max_concurrent = 1000
"""

# The script whose sending cancels a task of that stage.
_IN_FLIGHT = {"reserve": "reserve", "twice": "release", "settle": "settle"}

# The request whose context this is: its stage and its task. The limiter's own tasks (shielded
# reserve, settle and release) inherit the context, so the probe sees whose script it sends.
_CANCEL_AT: ContextVar[tuple[str, asyncio.Task[Any]] | None] = ContextVar("cancel", default=None)


class _Probe(AsyncLimiter):
    """Cancels the calling request as the script of its stage is sent, i.e. while in flight.

    ``turns`` more turns of the event loop pass before the script goes out, so the cancelled
    caller runs on (to its ``aclose()``, say) while the script has not even been sent.
    """

    turns = 0

    async def _io(self, request: Request) -> Any:
        target = _CANCEL_AT.get()
        if target and isinstance(request, Script) and request.name == _IN_FLIGHT.get(target[0]):
            target[1].cancel()
            for _ in range(self.turns):
                await asyncio.sleep(0)
        return await super()._io(request)


class _LateProbe(_Probe):
    turns = 10  # the cancelled caller reaches its aclose() before the script is sent


async def _request(lim: AsyncLimiter, rng: random.Random) -> None:
    async with await lim.reserve("p", "gpt-4o-mini", est_tokens=100) as r:
        await asyncio.sleep(rng.random() * 0.02)  # "the LLM call"
        await r.settle(input_tokens=90, output_tokens=10)


@pytest.mark.slow
def test_cancelled_tasks_release_everything(redis_url: str, rclient: Any) -> None:
    """Tasks cancelled before, during and after their reserve: held == 0, no slot in use."""

    async def main() -> tuple[int, int]:
        lim = AsyncLimiter.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        rng = random.Random(3)
        cancelled = finished = 0
        for _ in range(5):
            tasks = [asyncio.ensure_future(_request(lim, rng)) for _ in range(100)]
            loop = asyncio.get_running_loop()
            for t in tasks:  # cancel each at a random point of its life
                loop.call_later(rng.random() * 0.2, t.cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
            finished += sum(r is None for r in results)
            assert not [r for r in results if isinstance(r, Exception)]
        await lim.aclose()
        return cancelled, finished

    cancelled, finished = asyncio.run(main())
    assert cancelled > 100 and finished > 100, (cancelled, finished)
    assert held_nano(rclient, "p", "b") == 0
    assert int(budget_fields(rclient, "p").get("r:slots|n", 0)) == 0
    assert rclient.zcard("prism:{p}:leases") == 0


def _state(rclient: Any, rid: str) -> bytes:
    record: bytes = rclient.hget("prism:{p}:holds", rid)
    return record.split(b"\x1f")[0]


def test_cancelled_while_reserve_in_flight_releases_when_it_answers(
    redis_url: str, rclient: Any
) -> None:
    """``async with lim.reserve(...)`` cancelled as its script is sent: the task ends cancelled,
    the block never runs, and the hold the reserve took is released once it answers."""
    entered = False

    async def request(lim: AsyncLimiter) -> None:
        nonlocal entered
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("reserve", task))
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="in-flight"):
            entered = True

    async def main() -> None:
        lim = _Probe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert not entered
    assert _state(rclient, "in-flight") == b"R"  # it was held, then released
    assert held_nano(rclient, "p", "b") == 0


def test_cancelled_inside_the_block_releases_shielded(redis_url: str, rclient: Any) -> None:
    """``async with lim.reserve(...)`` cancelled inside the block, and again as the release
    that follows is sent: the release is shielded, so it still lands."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("twice", task))
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="in-block"):
            assert held_nano(rclient, "p", "b") > 0
            task.cancel()
            await asyncio.sleep(0)

    async def main() -> None:
        lim = _Probe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert _state(rclient, "in-block") == b"R"
    assert held_nano(rclient, "p", "b") == 0


def test_aclose_waits_for_a_settle_whose_caller_was_cancelled(redis_url: str, rclient: Any) -> None:
    """A settle whose caller is cancelled before the script even goes out still lands, after
    the release the block's exit made, and ``aclose()`` waits for it: the usage is booked."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("settle", task))
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="r") as r:
            await r.settle(input_tokens=90, output_tokens=10)

    async def main() -> None:
        lim = _LateProbe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert held_nano(rclient, "p", "b") == 0
    assert spent_nano(rclient, "p", "b") > 0
    assert [e["reason"] for e in audit(rclient, "p", "settle.late")] == ["after-release"]
