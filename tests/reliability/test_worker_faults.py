"""A worker dies or stalls while it holds reservations: nothing leaks, nothing is booked twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from _helpers import audit, held_nano, spent_nano

from prism_limiter import Limiter, Policy

POLICY = """
[projects.p]
allow_models = ["gpt-4o"]
[[projects.p.budgets]]
id = "b"
usd = 100.0
"""
HOLDS = 5
LEASE_S = 0.5

WORKER = """
import json, sys
from prism_limiter import Limiter
lim = Limiter.from_url(sys.argv[1])
held = [lim.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=100, ttl_s=float(sys.argv[2]))
        for _ in range(int(sys.argv[3]))]
print(json.dumps([r.id for r in held]), flush=True)
sys.stdin.readline()  # stopped or killed here; told to go on, it settles late
print(json.dumps([r.settle(input_tokens=400, output_tokens=40).cost_usd for r in held]), flush=True)
"""


def _worker(url: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, str(LEASE_S), str(HOLDS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ids = json.loads(proc.stdout.readline())  # the holds are taken
    return proc, ids


def _past_the_lease() -> None:
    time.sleep(LEASE_S + 0.1)  # the lease runs on the server clock: a lower bound, not a window


def test_killed_worker_leaks_nothing(redis_url: str, rclient: Any) -> None:
    """SIGKILL with live holds: the leases end them (charged per policy), audited once each."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(POLICY))
    proc, ids = _worker(redis_url)
    hold = held_nano(rclient, "p", "b") // HOLDS
    proc.kill()
    proc.communicate()  # reaps it and closes its pipes
    _past_the_lease()
    assert lim.sweep("p") == HOLDS
    assert held_nano(rclient, "p", "b") == 0
    assert spent_nano(rclient, "p", "b") == hold * HOLDS
    assert sorted(e["rid"] for e in audit(rclient, "p", "hold.expired")) == sorted(ids)
    lim.close()


def test_stalled_worker_settles_late_once(redis_url: str, rclient: Any) -> None:
    """SIGSTOP past the lease: the holds expire; resumed, each settle is one correction."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(POLICY))
    proc, ids = _worker(redis_url)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        _past_the_lease()
        assert lim.sweep("p") == HOLDS
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    costs = json.loads(proc.stdout.readline())
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert held_nano(rclient, "p", "b") == 0
    assert spent_nano(rclient, "p", "b") == round(sum(costs) * 1e9)
    late = audit(rclient, "p", "settle.late")
    assert sorted(e["rid"] for e in late) == sorted(ids)
    assert {e["reason"] for e in late} == {"after-expiry-charged"}
    assert lim.usage("p").total.requests == HOLDS
    lim.close()
