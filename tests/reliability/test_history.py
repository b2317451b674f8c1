"""History checker under load: every acknowledged operation, replayed, explains the store.

N processes x M threads (``_workload``) contend for one small hot budget and a concurrency limit
and spread over cold projects (per-project, per-customer and per-feature budgets), logging every
operation with its outcome. Meanwhile a monitor reads the hot budget in single reads: spent +
held never passes the cap in force, live holds never pass the concurrency limit; whenever the
room left is down to about six holds it raises the cap to spent + a dozen holds
(``apply_policy``), so that the budget stays contended and every worker follows policy changes
mid-run. Afterwards, once every lease has run out and been swept, ``_replay`` rebuilds from the
logs alone what the store must hold — each budget's spent, held 0, every reservation's end, the
attribution rows, every audit entry — and ``_check`` compares it with ``status``, ``usage``,
``read_audit`` and the hold records.

``--soak[=SECONDS]`` (or ``PRISM_SOAK``) runs 6 processes x 6 threads for SECONDS (600 by
default) instead of the CI size.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from _check import Checker
from _replay import Model
from _workload import COLD, HOT, HOT_CAP, HOT_SLOTS, Sizes, hot_policy, policy, run_process

from prism_limiter import Limiter, Policy

CI = Sizes(processes=4, threads=4, steps=10_000, scale=12)
SETTLE_DEADLINE_S = 120  # for the last leases to run out and the flood windows to close


def _sizes(soak_s: float | None) -> Sizes:
    if soak_s is None:
        return CI
    # The CI size is about 30 s of load at a scale of 12: the cold caps grow with the time.
    scale = int(soak_s * 0.3) + 1
    return Sizes(6, 6, steps=500, seconds=soak_s, scale=scale, retention_s=180)


class Monitor(threading.Thread):
    """Reads the hot budget while the workers run; raises its cap as spend nears it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client: Any = redis.Redis.from_url(url, socket_timeout=10)
        self.lim = Limiter.from_url(url, socket_timeout=10)
        self.caps = [HOT_CAP]
        self.samples = 0
        self.violations: list[str] = []
        self.stop = threading.Event()

    def sample(self) -> None:
        pool, config, slots = self.client.hmget(
            f"prism:{{{HOT}}}:budgets", "pool", "pool|c", "r:slots"
        )
        if pool is None or config is None:
            return
        spent, held = (int(v) for v in pool.decode().split(":")[:2])
        cap = int(config.decode().split("\x1f", 1)[0])
        live = int(slots.decode().split(":")[3]) if slots else 0
        self.samples += 1
        if spent + held > cap or live > HOT_SLOTS:
            self.violations.append(f"spent {spent} + held {held} > cap {cap}, or {live} slots")
        if self.caps[-1] - spent < HOT_CAP // 2:  # room for about six holds left
            self.caps.append(-(-(spent + HOT_CAP) // 1000) * 1000)
            self.lim.apply_policy(Policy.from_toml(hot_policy(self.caps[-1])), actor="monitor")

    def run(self) -> None:
        while not self.stop.wait(0.005):
            self.sample()
        self.sample()


def _settle_down(lim: Limiter, client: Any) -> None:
    """Wait until every lease has run out and is swept, and every flood window is written."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    while True:
        pending = 0
        for project in (HOT, *COLD):
            lim.sweep(project)
            pending += client.zcard(f"prism:{{{project}}}:leases")
            head = client.hkeys(f"prism:{{{project}}}:audit:head")
            pending += sum(1 for k in head if k.startswith(b"w:"))
        if not pending:
            return
        assert time.monotonic() < deadline, f"{pending} leases or flood windows still open"
        time.sleep(0.1)


@pytest.mark.slow
def test_history_under_load_replays_exactly(
    redis_url: str, rclient: Any, tmp_path: Path, soak_s: float | None
) -> None:
    """No overspend past the documented bound (none at all on the hot budget, at any
    moment), every reservation ends once, repeats are no-ops, every decision's audit entry is
    there once, and spent, held, usage and the hold records equal the replayed history."""
    sizes = _sizes(soak_s)
    lim = Limiter.from_url(redis_url, socket_timeout=10)
    lim.apply_policy(Policy.from_toml(policy(HOT_CAP, sizes.scale)))
    since = datetime.now(UTC)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    logs = [tmp_path / f"history-{i}.jsonl" for i in range(sizes.processes)]
    procs = [
        ctx.Process(target=run_process, args=(redis_url, str(log), i, sizes, go))
        for i, log in enumerate(logs)
    ]
    for p in procs:
        p.start()
    monitor = Monitor(redis_url)
    monitor.start()
    go.set()
    try:
        for p in procs:
            p.join(600 + 2 * sizes.seconds)
            assert p.exitcode == 0, f"a worker process ended with {p.exitcode}"
    finally:
        monitor.stop.set()
        monitor.join(60)
        for p in procs:
            p.kill()
    _settle_down(lim, rclient)

    model = Model(monitor.caps, sizes.scale)
    model.replay(logs)
    model.finish()
    figures = Checker(model, lim, rclient, since, kept_s=sizes.retention_s).check()
    print(f"\nhistory: {sizes}, {monitor.samples} samples of the hot budget\n{figures}")
    assert not model.problems, "\n".join(model.problems[:30])
    assert monitor.samples and not monitor.violations, monitor.violations[:5]
    assert figures.denials and figures.expired and figures.late_settles  # the load did its job
