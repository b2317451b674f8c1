"""No overspend from concurrency: 6 processes x 4 threads on one $1 budget, real redis-server."""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from typing import Any

import pytest
from _helpers import audit, held_nano, spent_nano

from prism_limiter import BudgetExceeded, Limiter, Policy

PROCESSES, THREADS = 6, 4
POLICY = """
[projects.load]
allow_models = ["gpt-4o-mini"]
[[projects.load.budgets]]
id = "dollar"
usd = 1.0
period = "month"
warn_at = [0.5, 0.8, 0.95]
"""


def _worker(url: str, seed: int, out: Any) -> None:
    lim = Limiter.from_url(url, socket_timeout=5)
    results: list[tuple[list[int], int]] = []
    lock = threading.Lock()

    def run(thread_seed: int) -> None:
        rng = random.Random(thread_seed)
        costs: list[int] = []
        denials = 0
        while denials < 3:  # keep knocking after the first denial: each one must be audited
            est, max_out = rng.randint(200, 3000), rng.randint(0, 800)
            try:
                r = lim.reserve(
                    "load",
                    "gpt-4o-mini",
                    est_tokens=est,
                    max_output_tokens=max_out,
                    tags={"worker": str(thread_seed % 5)},
                )
            except BudgetExceeded:
                denials += 1
                continue
            s = r.settle(input_tokens=est, output_tokens=max_out)  # exact estimate
            costs.append(round(s.cost_usd * 1e9))
        with lock:
            results.append((costs, denials))

    threads = [threading.Thread(target=run, args=(seed * 100 + i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


@pytest.mark.slow
def test_spent_never_exceeds_cap(redis_url: str, rclient: Any) -> None:
    """spent <= cap, held == 0, client costs sum to spent, one warn per threshold, one
    budget.blocked per denial."""
    Limiter.from_url(redis_url).apply_policy(Policy.from_toml(POLICY))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(redis_url, i, queue)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in queue.get(timeout=300)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    costs = [c for cs, _ in results for c in cs]
    denials = sum(d for _, d in results)
    spent = spent_nano(rclient, "load", "dollar")
    assert len(results) == PROCESSES * THREADS
    assert spent <= 1_000_000_000
    assert spent == sum(costs)
    assert held_nano(rclient, "load", "dollar") == 0
    assert spent > 1_000_000_000 - 3_000_000  # filled up to within one request's cost
    warns = audit(rclient, "load", "budget.warn")
    assert sorted(w["threshold"] for w in warns) == ["0.5", "0.8", "0.95"]
    # Identical denials within a second share an entry with a count; once the last window has
    # ended (a lower bound), a sweep writes the counts still open.
    time.sleep(1.05)
    lim = Limiter.from_url(redis_url)
    lim.sweep("load")
    blocked = audit(rclient, "load", "budget.blocked")
    assert sum(int(e["count"]) for e in blocked) == denials == PROCESSES * THREADS * 3
    # Aggregated: each window (per worker tag, a second from its first entry) has at most two
    # entries, the first denial and the count of the rest; whatever the machine's speed.
    span_s = (int(blocked[-1]["ts_ms"]) - int(blocked[0]["ts_ms"])) // 1000 + 2
    assert len(blocked) <= 5 * 2 * span_s
    assert lim.verify_audit("load").ok
    report = Limiter.from_url(redis_url).usage("load")
    assert round(report.total.cost_usd * 1e9) == spent and report.total.requests == len(costs)
