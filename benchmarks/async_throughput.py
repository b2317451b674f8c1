"""asyncio throughput: reserve+settle per second in one process, against a no-op script loop.

N concurrent tasks on one ``AsyncLimiter`` each loop reserve -> settle for a fixed time; the
baseline is the same tasks each looping two no-op ``EVALSHA`` calls (the I/O floor of
reserve+settle) on the same client library, server and event loop, in the same run.

    python benchmarks/async_throughput.py [--url URL] [--tasks N] [--seconds S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack

import redis.asyncio
from _common import BENCH_POLICY

from prism_limiter import AsyncLimiter, Policy
from prism_limiter._devserver import redis_server


async def _rate(fn: Callable[[], Awaitable[None]], tasks: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await fn()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done / (time.perf_counter() - start)


async def run(url: str, tasks: int, seconds: float) -> dict[str, float]:
    async with AsyncLimiter.from_url(url) as lim:
        await lim.apply_policy(Policy.from_toml(BENCH_POLICY))
        client = redis.asyncio.Redis.from_url(url)
        noop = client.register_script("return 1")

        async def reserve_settle() -> None:
            r = await lim.reserve(
                "bench",
                "gpt-4o-mini",
                est_tokens=1200,
                max_output_tokens=400,
                tags={"customer": "org:42"},
            )
            await r.settle(input_tokens=1187, output_tokens=212, cache_read_tokens=1024)

        async def two_noops() -> None:
            await noop()
            await noop()

        await _rate(reserve_settle, tasks, 0.5)  # warm up
        await _rate(two_noops, tasks, 0.5)
        ours = await _rate(reserve_settle, tasks, seconds)
        floor = await _rate(two_noops, tasks, seconds)
        await client.aclose()
    return {"reserve_settle_per_s": ours, "two_noop_evalsha_per_s": floor, "ratio": ours / floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Redis URL (default: a private redis-server)")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.url or stack.enter_context(redis_server())
        result = asyncio.run(run(url, args.tasks, args.seconds))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.tasks} tasks, {args.seconds:g} s each, one process, loopback")
    print(f"reserve+settle:        {result['reserve_settle_per_s']:8.0f} /s")
    print(f"two no-op EVALSHA:     {result['two_noop_evalsha_per_s']:8.0f} /s")
    print(f"ratio:                 {result['ratio']:8.2f}")


if __name__ == "__main__":
    main()
