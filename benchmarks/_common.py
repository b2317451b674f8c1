"""What the benchmarks share: the policy under test and latency summaries."""

from __future__ import annotations

import statistics

# Two budgets on every request, one of them split by customer (a typical project).
BENCH_POLICY = """
[projects.bench]
allow_models = ["gpt-4o-mini"]
[[projects.bench.budgets]]
id = "monthly"
usd = 1000000
[[projects.bench.budgets]]
id = "per-customer"
usd = 100000
period = "day"
split_by = "customer"
"""


def summary(samples_us: list[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies in microseconds."""
    return {
        "p50_us": statistics.median(samples_us),
        "p99_us": statistics.quantiles(samples_us, n=100)[98],
        "mean_us": statistics.fmean(samples_us),
    }
