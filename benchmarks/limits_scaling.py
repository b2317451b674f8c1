"""reserve latency with 1 vs 5 matching limits (budgets and rate limits), same server, same run.

One sync client on loopback; each iteration is one ``reserve`` followed by a ``release`` (timed
separately: only the reserve is reported). The one-limit project has a single budget; the
five-limit project has three budgets (one split by customer) and two rate limits (rpm+tpm, and
a concurrency cap). A no-op ``EVALSHA`` is timed in the same rounds as the floor.

    python benchmarks/limits_scaling.py [--url URL] [--iterations N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import ExitStack

import redis

from prism_limiter import Limiter, Policy
from prism_limiter._devserver import redis_server

POLICY = """
[projects.one]
allow_models = ["gpt-4o-mini"]
[[projects.one.budgets]]
id = "monthly"
usd = 1000000

[projects.five]
allow_models = ["gpt-4o-mini"]
[[projects.five.budgets]]
id = "monthly"
usd = 1000000
[[projects.five.budgets]]
id = "daily"
usd = 100000
period = "day"
[[projects.five.budgets]]
id = "per-customer"
usd = 100000
period = "day"
split_by = "customer"
[[projects.five.rate_limits]]
id = "provider"
rpm = 100000000
tpm = 1000000000
[[projects.five.rate_limits]]
id = "inflight"
max_concurrent = 1000
"""


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
        lim.apply_policy(Policy.from_toml(POLICY))
        noop = client.register_script("return 1")
        tags = {"customer": "org:42"}
        samples: dict[str, list[float]] = {"1 limit": [], "5 limits": [], "no-op EVALSHA": []}

        def reserve(project: str) -> float:
            t = time.perf_counter()
            r = lim.reserve(
                project, "gpt-4o-mini", est_tokens=1200, max_output_tokens=400, tags=tags
            )
            elapsed = (time.perf_counter() - t) * 1e6
            r.release()
            return elapsed

        def floor() -> float:
            t = time.perf_counter()
            noop()
            return (time.perf_counter() - t) * 1e6

        for _ in range(200):
            reserve("one"), reserve("five"), floor()
        for _ in range(args.iterations):  # interleaved, so drift hits every column alike
            samples["1 limit"].append(reserve("one"))
            samples["5 limits"].append(reserve("five"))
            samples["no-op EVALSHA"].append(floor())
        summary = {
            k: {"p50_us": statistics.median(v), "p99_us": statistics.quantiles(v, n=100)[98]}
            for k, v in samples.items()
        }
        ratio = summary["5 limits"]["p50_us"] / summary["1 limit"]["p50_us"]
        report = {
            "redis_version": client.info("server")["redis_version"],
            "results": summary,
            "five_over_one_p50": ratio,
        }
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(f"redis {report['redis_version']}, {args.iterations} reserves each, loopback")
        print(f"{'':16}{'p50 us':>10}{'p99 us':>10}")
        for name, s in summary.items():
            print(f"{name:16}{s['p50_us']:10.1f}{s['p99_us']:10.1f}")
        print(f"reserve with 5 limits / with 1 limit (p50): {ratio:.2f}x")


if __name__ == "__main__":
    main()
