"""An asyncio worker pool sharing one budget: workers take jobs until the budget blocks them.

Run it from the repository root::

    python examples/asyncio_workers.py

It uses ``PRISM_REDIS_URL`` when set, else the embedded ``memory://`` store, and applies the
``batch`` project of ``examples/policy.toml`` (a nightly budget, 8 calls in flight at most)
before it starts.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from prism_limiter import AsyncLimiter, BudgetExceeded, Policy, RateLimited

PROJECT = "batch"
POLICY_FILE = Path(__file__).with_name("policy.toml")


def own_policy() -> Policy:
    """This pool's project in ``examples/policy.toml``; applying it leaves other projects alone."""
    return Policy(projects={PROJECT: Policy.load(POLICY_FILE).projects[PROJECT]})


async def worker(limiter: AsyncLimiter, jobs: asyncio.Queue[int], done: list[float]) -> None:
    rng = random.Random()
    while True:
        job = await jobs.get()
        try:
            async with limiter.reserve(
                PROJECT,
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
    """Apply the pool's policy, run the pool; returns (jobs done, dollars settled)."""
    async with AsyncLimiter.from_url(url) as limiter:
        await limiter.apply_policy(own_policy(), actor="examples.asyncio_workers")
        jobs: asyncio.Queue[int] = asyncio.Queue()
        for i in range(jobs_total):
            jobs.put_nowait(i)
        done: list[float] = []
        await asyncio.gather(*(worker(limiter, jobs, done) for _ in range(workers)))
    return len(done), sum(done)


def main() -> None:
    url = os.environ.get("PRISM_REDIS_URL") or "memory://"
    (budget,) = own_policy().projects[PROJECT].budgets
    n, usd = asyncio.run(run(url))
    print(
        f"{n} jobs done for ${usd:.6f} before the {budget.id} budget of "
        f"${budget.usd:g} blocked the pool"
    )


if __name__ == "__main__":
    main()
