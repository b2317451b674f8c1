"""reserve+settle latency against a baseline of two no-op EVALSHA calls, same server, same run.

Measures one sync client on loopback: per iteration either ``reserve`` + ``settle`` of one
request (two budgets match it, one split by customer), or two ``EVALSHA`` of ``return 1`` (the
floor: two round trips with a script call each). Prints p50/p99 per iteration and the ratio.

    python benchmarks/reserve_settle.py [--url URL] [--iterations N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import ExitStack

import redis
from _common import BENCH_POLICY, summary

from prism_limiter import Limiter, Policy
from prism_limiter._devserver import redis_server


def _time(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Redis URL (default: a private redis-server)")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.url or stack.enter_context(redis_server())
        client = redis.Redis.from_url(url)
        lim = Limiter.from_url(url)
        lim.apply_policy(Policy.from_toml(BENCH_POLICY))
        noop = client.register_script("return 1")
        tags = {"customer": "org:42"}

        def reserve_settle() -> None:
            r = lim.reserve(
                "bench", "gpt-4o-mini", est_tokens=1200, max_output_tokens=400, tags=tags
            )
            r.settle(input_tokens=1187, output_tokens=212, cache_read_tokens=1024)

        def two_noops() -> None:
            noop()
            noop()

        for fn in (reserve_settle, two_noops):  # warm up: scripts loaded, caches filled
            _time(fn, 200)
        results = {"reserve_settle": [], "two_noop_evalsha": []}  # type: dict[str, list[float]]
        for _ in range(5):  # interleave rounds so drift hits both sides alike
            results["reserve_settle"] += _time(reserve_settle, args.iterations // 5)
            results["two_noop_evalsha"] += _time(two_noops, args.iterations // 5)
        stats = {k: summary(v) for k, v in results.items()}
        ratio = stats["reserve_settle"]["p50_us"] / stats["two_noop_evalsha"]["p50_us"]
        info = client.info("server")
        report = {
            "redis_version": info["redis_version"],
            "iterations": args.iterations,
            "results": stats,
            "p50_ratio": ratio,
        }
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(f"redis {info['redis_version']}, {args.iterations} iterations each, loopback")
        print(f"{'':24}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
        for name, s in stats.items():
            print(f"{name:24}{s['p50_us']:10.1f}{s['p99_us']:10.1f}{s['mean_us']:10.1f}")
        print(f"reserve+settle / two no-op EVALSHA (p50): {ratio:.2f}x")


if __name__ == "__main__":
    main()
