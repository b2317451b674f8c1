"""memory:// (embedded, in-process) runs the same public API and the same Lua scripts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from prism_limiter import AsyncLimiter, BudgetExceeded, Limiter, ModelNotAllowed, Policy

POLICY = Policy.from_toml(
    "[projects.p]\nallow_models=['gpt-4o*']\ndeny_models=['gpt-4o-mini']\n"
    "[[projects.p.budgets]]\nid='day'\nusd=0.01\nperiod='day'\ntimezone='Asia/Tokyo'\n"
)


def _url() -> str:
    return f"memory://{uuid.uuid4().hex}"


def test_reserve_settle_until_blocked() -> None:
    """Holds, settles, blocks at the cap, and reports status, with no server at all."""
    lim = Limiter.from_url(_url())
    lim.apply_policy(POLICY)
    with pytest.raises(ModelNotAllowed):
        lim.reserve("p", "gpt-4o-mini", est_tokens=1)
    for _ in range(4):  # $0.0025 each against $0.01
        with lim.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=0) as r:
            r.settle(input_tokens=1000, output_tokens=0)
    with pytest.raises(BudgetExceeded):
        lim.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=0)
    [status] = lim.status("p")
    assert status.spent_usd == pytest.approx(0.01) and status.held_usd == 0
    assert status.resets_at is not None and status.resets_at.hour == 15  # Tokyo midnight in UTC


def test_instances_sharing_a_name_share_state() -> None:
    """Two limiters on the same memory:// name see one budget (one process, many threads)."""
    url = _url()
    a, b = Limiter.from_url(url), Limiter.from_url(url)
    a.apply_policy(POLICY)
    r = a.reserve("p", "gpt-4o", est_tokens=10, max_output_tokens=10)
    assert b.release("p", r.id) is True


def test_async_memory_mode() -> None:
    async def main() -> None:
        lim = AsyncLimiter.from_url(_url())
        await lim.apply_policy(POLICY)
        async with await lim.reserve("p", "gpt-4o", est_tokens=10, max_output_tokens=10) as r:
            s = await r.settle(input_tokens=10, output_tokens=1)
        assert s.first and s.cost_usd > 0
        await lim.aclose()

    asyncio.run(main())


def test_a_burst_beyond_the_pool_size_waits_for_a_connection() -> None:
    """memory:// under a burst of 300 concurrent requests (more than a pool holds): like
    redis://, callers wait for a connection instead of failing with "Too many connections"."""

    async def main() -> None:
        lim = AsyncLimiter.from_url(_url())
        await lim.apply_policy(POLICY)

        async def one() -> None:
            async with lim.reserve("p", "gpt-4o", est_tokens=1, max_output_tokens=1) as r:
                await r.settle(input_tokens=1, output_tokens=1)

        await asyncio.gather(*(one() for _ in range(300)))
        [status] = await lim.status("p")
        assert status.held_usd == 0 and status.spent_usd > 0
        await lim.aclose()

    asyncio.run(main())
