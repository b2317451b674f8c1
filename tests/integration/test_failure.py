"""Redis unreachable: closed raises BackendUnavailable fast, open allows and logs; no hang."""

from __future__ import annotations

import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from prism_limiter import BackendUnavailable, Limiter, Policy
from prism_limiter._devserver import free_port


def _dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_closed_mode_raises_within_the_timeout() -> None:
    """Nothing listens: reserve raises BackendUnavailable in well under a second or two."""
    lim = Limiter.from_url(_dead_url(), socket_timeout=0.2, retries=1)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        lim.reserve("p", "gpt-4o", est_tokens=1)
    assert time.monotonic() - start < 5


def test_open_mode_allows_and_logs() -> None:
    """failure_mode=open lets the request through, flagged degraded, and logs it."""
    lim = Limiter.from_url(_dead_url(), socket_timeout=0.2, retries=0, failure_mode="open")
    with capture_logs() as logs, lim.reserve("p", "gpt-4o", est_tokens=1) as r:
        assert r.decision.degraded and r.allowed
        r.settle(input_tokens=1, output_tokens=1)
    events = [e["event"] for e in logs]
    assert events.count("prism.backend.degraded") == 2  # the reserve, and the unbooked settle


def test_server_that_stops_answering(redis_url: str, rclient: Any, policy: Policy) -> None:
    """A server paused mid-flight (CLIENT PAUSE) gives a timeout, not a hang."""
    lim = Limiter.from_url(redis_url, socket_timeout=0.3, retries=0)
    lim.apply_policy(policy)
    lim.reserve("search", "gpt-4o-mini", est_tokens=1).release()
    # A long pause, ended as soon as the timeout is seen (WRITE pauses every script but lets
    # UNPAUSE through): a hang would last all of it, and a slow machine has seconds of room to
    # reach its 0.3 s timeout.
    rclient.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            lim.reserve("search", "gpt-4o-mini", est_tokens=1)
        assert time.monotonic() - start < 10
    finally:
        rclient.execute_command("CLIENT", "UNPAUSE")
