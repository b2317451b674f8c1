"""Redis trouble: out of memory changes nothing; a server killed under load errs, never hangs."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
import redis
from _helpers import keyspace

from prism_limiter import BackendUnavailable, BudgetExceeded, Limiter, Policy
from prism_limiter.engine._devserver import redis_server

POLICY = Policy.from_toml(
    "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='b'\nusd=100\n"
)


def _fill_up(raw: Any) -> None:
    for i in range(100_000):
        try:
            raw.set(f"filler:{i}", "x" * 10_000)
        except redis.exceptions.OutOfMemoryError:
            return
    raise AssertionError("maxmemory was never reached")


@pytest.mark.slow
def test_out_of_memory_refuses_and_changes_nothing() -> None:
    """maxmemory + noeviction: the script's first write is refused, so no state changes."""
    with redis_server("--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as url:
        lim = Limiter.from_url(url)
        lim.apply_policy(POLICY)
        held = lim.reserve("p", "gpt-4o", est_tokens=100)
        raw = redis.Redis.from_url(url)
        _fill_up(raw)
        before = {k: v for k, v in keyspace(raw).items() if not k.startswith(b"filler:")}
        with pytest.raises(BackendUnavailable, match="OutOfMemory"):
            lim.reserve("p", "gpt-4o", est_tokens=100)
        with pytest.raises(BackendUnavailable, match="OutOfMemory"):
            held.settle(input_tokens=100, output_tokens=10)
        after = {k: v for k, v in keyspace(raw).items() if not k.startswith(b"filler:")}
        assert after == before
        raw.flushall()  # memory back: the same settle now lands, exactly once
        assert held.settle(input_tokens=100, output_tokens=10).first
        lim.close()
        raw.close()


@pytest.mark.slow
def test_server_killed_under_load_fails_fast() -> None:
    """Kill redis-server while 8 threads reserve: every call ends (ok, denied or unavailable)
    within the timeout budget; none hangs. The kill waits for the first success and the stop
    for the first failure after it, so a slow machine only makes the test slower."""
    with redis_server() as url:
        lim = Limiter.from_url(url, socket_timeout=0.3, retries=1)
        lim.apply_policy(POLICY)
        outcomes: list[str] = []
        slowest = [0.0]
        lock = threading.Lock()
        seen = {"ok": threading.Event(), "unavailable": threading.Event()}
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    lim.reserve("p", "gpt-4o-mini", est_tokens=10).release()
                    outcome = "ok"
                except BackendUnavailable:
                    outcome = "unavailable"
                except BudgetExceeded:
                    outcome = "denied"
                with lock:
                    outcomes.append(outcome)
                    slowest[0] = max(slowest[0], time.monotonic() - start)
                if outcome in seen:
                    seen[outcome].set()

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        assert seen["ok"].wait(60), "no reserve succeeded before the kill"
        raw = redis.Redis.from_url(url)
        with contextlib.suppress(redis.exceptions.ConnectionError):  # it closes as it goes
            raw.shutdown(nosave=True)
        seen["unavailable"].wait(60)
        stop.set()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
    assert "ok" in outcomes and "unavailable" in outcomes
    assert slowest[0] < 5  # pool wait + socket timeouts + one retry, never a hang
