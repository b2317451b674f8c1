"""Redis unreachable: closed raises BackendUnavailable fast, open allows and logs; no hang."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit
from structlog.testing import capture_logs

from prism_limiter import BackendUnavailable, Limiter, ModelNotAllowed, Policy
from prism_limiter.engine._devserver import free_port


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
    assert events == ["prism.backend.degraded", "prism.settle.unbooked"]


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


POLICY = """
[projects.p]
allow_models = ["gpt-4o*"]
[[projects.p.budgets]]
id = "b"
usd = 1.0
"""


def test_open_mode_enforces_the_cached_model_policy(redis_url: str, rclient: Any) -> None:
    """With Redis unreachable, open mode still denies a model the cached policy denies."""
    lim = Limiter.from_url(redis_url, socket_timeout=0.2, retries=0, failure_mode="open")
    lim.apply_policy(Policy.from_toml(POLICY))
    lim.reserve("p", "gpt-4o", est_tokens=1).release()  # the policy is now cached
    rclient.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # scripts wait
    try:
        with pytest.raises(ModelNotAllowed) as denied:
            lim.reserve("p", "claude-haiku-4-5", est_tokens=1)
        allowed = lim.reserve("p", "gpt-4o-mini", est_tokens=1)
    finally:
        rclient.execute_command("CLIENT", "UNPAUSE")
    assert denied.value.decision.degraded and denied.value.decision.reason == "model-not-allowed"
    assert allowed.decision.degraded and allowed.allowed


def test_degraded_reservation_is_booked_once_redis_answers(redis_url: str, rclient: Any) -> None:
    """A reservation taken degraded is booked by its settle when Redis is back."""
    lim = Limiter.from_url(redis_url, socket_timeout=0.2, retries=0, failure_mode="open")
    lim.apply_policy(Policy.from_toml(POLICY))
    lim.reserve("p", "gpt-4o", est_tokens=1).release()
    rclient.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # scripts wait
    try:
        r = lim.reserve("p", "gpt-4o", est_tokens=100, tags={"team": "a"})
    finally:
        rclient.execute_command("CLIENT", "UNPAUSE")
    assert r.decision.degraded
    s = r.settle(input_tokens=100, output_tokens=10)
    assert s.unknown and not s.degraded and s.cost_usd > 0
    [entry] = audit(rclient, "p", "settle.unknown")
    assert entry["rid"] == r.id
    assert lim.usage("p").by_tag["team"]["a"].requests == 1


def test_unbooked_settle_can_be_replayed(redis_url: str, rclient: Any) -> None:
    """A settle Redis could not take is logged with what a replay needs; replaying it by id
    books it exactly once."""
    dead = Limiter.from_url(_dead_url(), socket_timeout=0.2, retries=0, failure_mode="open")
    with capture_logs() as logs:
        r = dead.reserve("p", "gpt-4o", est_tokens=100, tags={"team": "a"})
        s = r.settle(input_tokens=100, output_tokens=10)
    assert s.degraded
    [line] = [e for e in logs if e["event"] == "prism.settle.unbooked"]
    live = Limiter.from_url(redis_url)
    live.apply_policy(Policy.from_toml(POLICY))
    counts = {k: line[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens")}
    for _ in range(2):
        live.settle(
            line["project"],
            line["reservation_id"],
            model=line["model"],
            tags=line["tags"],
            **counts,
        )
    assert len(audit(rclient, "p", "settle.unknown")) == 1
    assert live.usage("p").total.requests == 1


def test_breaker_fails_fast_then_probes() -> None:
    """After repeated failures calls fail at once for the cool-down, then try Redis again."""
    lim = Limiter.from_url(
        _dead_url(), socket_timeout=0.2, retries=0, breaker_failures=2, breaker_cooldown_s=0.3
    )
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match="Redis unavailable"):
            lim.reserve("p", "gpt-4o", est_tokens=1)
    with pytest.raises(BackendUnavailable, match="circuit open"):
        lim.reserve("p", "gpt-4o", est_tokens=1)
    time.sleep(0.35)  # past the cool-down: a lower bound, not a window
    with pytest.raises(BackendUnavailable, match="Redis unavailable"):
        lim.reserve("p", "gpt-4o", est_tokens=1)  # a probe went to Redis
    with pytest.raises(BackendUnavailable, match="circuit open"):
        lim.reserve("p", "gpt-4o", est_tokens=1)


def test_a_degraded_reservation_left_without_a_settle_is_corrected_by_a_later_one(
    redis_url: str, rclient: Any
) -> None:
    """A reservation taken degraded and left without a settle is charged its estimate (as an
    id Redis never saw); a real settle by id afterwards books the difference once, as it does
    for any charged estimate, instead of being answered with the estimate."""
    lim = Limiter.from_url(redis_url, socket_timeout=0.2, retries=0, failure_mode="open")
    lim.apply_policy(Policy.from_toml(POLICY))
    lim.reserve("p", "gpt-4o", est_tokens=1).release()
    rclient.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # scripts wait
    try:
        r = lim.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=100, tags={"team": "a"})
    finally:
        rclient.execute_command("CLIENT", "UNPAUSE")
    assert r.decision.degraded
    with r:
        pass  # no settle: the estimate is charged
    s = lim.settle("p", r.id, input_tokens=10, output_tokens=1)
    assert s.first and s.late
    usage = lim.usage("p")
    assert usage.total.requests == 1
    assert usage.total.input_tokens == 10 and usage.total.output_tokens == 1
    assert usage.total.cost_usd == pytest.approx(s.cost_usd)
    again = lim.settle("p", r.id, input_tokens=10, output_tokens=1)
    assert not again.first and lim.usage("p").total.cost_usd == pytest.approx(s.cost_usd)
