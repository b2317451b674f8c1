"""Cancellation: hundreds of asyncio tasks cancelled mid-flight leak no hold and no slot."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from _helpers import budget_fields, held_nano

from prism_limiter import AsyncLimiter, Policy

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
