"""An asyncio worker pool sharing one budget: workers take jobs until the budget blocks them.

Run it:  PRISM_REDIS_URL=redis://localhost:6379/0 python examples/asyncio_workers.py
"""

from __future__ import annotations

import asyncio
import os
import random

from prism_limiter import AsyncLimiter, BudgetExceeded, Policy, RateLimited

POLICY = Policy.from_toml(
    """
[projects.batch]
allow_models = ["gpt-4o-mini"]
[[projects.batch.budgets]]
id = "nightly"
usd = 0.02
period = "day"
[[projects.batch.rate_limits]]
id = "provider"
max_concurrent = 8
"""
)


async def worker(limiter: AsyncLimiter, jobs: asyncio.Queue[int], done: list[float]) -> None:
    rng = random.Random()
    while True:
        job = await jobs.get()
        try:
            async with limiter.reserve(
                "batch",
                "gpt-4o-mini",
                est_tokens=1500,
                max_output_tokens=300,
                tags={"job": str(job % 10)},
            ) as r:
                await asyncio.sleep(rng.random() * 0.005)  # the LLM call
                s = await r.settle(input_tokens=rng.randint(800, 1500), output_tokens=200)
                done.append(s.cost_usd)
        except BudgetExceeded:
            jobs.task_done()
            return  # the budget is spent: this worker stops
        except RateLimited as exc:  # 8 in flight already: put the job back, wait a little
            jobs.put_nowait(job)
            await asyncio.sleep(exc.retry_after_s or 0.002)
        jobs.task_done()


async def run(url: str, workers: int = 16, jobs_total: int = 500) -> tuple[int, float]:
    """Returns (jobs done, dollars settled)."""
    limiter = AsyncLimiter.from_url(url)
    await limiter.apply_policy(POLICY)
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs_total):
        jobs.put_nowait(i)
    done: list[float] = []
    await asyncio.gather(*(worker(limiter, jobs, done) for _ in range(workers)))
    await limiter.aclose()
    return len(done), sum(done)


if __name__ == "__main__":
    n, usd = asyncio.run(run(os.environ.get("PRISM_REDIS_URL", "memory://")))
    print(f"{n} jobs done for ${usd:.6f} before the nightly budget of $0.02 blocked the pool")
