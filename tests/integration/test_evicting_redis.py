"""A Redis that may evict keys could reset a budget's spend: it is refused, or flagged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from prism_limiter import BackendUnavailable, Policy

POLICY = "[projects.p]\nallow_models = ['*']\n[[projects.p.budgets]]\nid = 'b'\nusd = 1.0\n"


@pytest.fixture
def evicting(rclient: Any) -> Iterator[Any]:
    rclient.config_set("maxmemory-policy", "allkeys-lru")
    try:
        yield rclient
    finally:
        rclient.config_set("maxmemory-policy", "noeviction")


def test_evicting_redis_is_refused(make_limiter: Any, evicting: Any) -> None:
    """Under allkeys-lru every operation is refused (closed mode), saying why."""
    lim = make_limiter()
    with capture_logs() as logs, pytest.raises(BackendUnavailable, match="allkeys-lru"):
        lim.apply_policy(Policy.from_toml(POLICY))
    assert [e["event"] for e in logs] == ["prism.redis.evicting"]
    with pytest.raises(BackendUnavailable, match="noeviction"):
        lim.reserve("p", "gpt-4o", est_tokens=10)
    evicting.config_set("maxmemory-policy", "noeviction")
    lim.apply_policy(Policy.from_toml(POLICY))  # checked again: fixed without a restart
    lim.reserve("p", "gpt-4o", est_tokens=10).release()


def test_evicting_redis_can_be_allowed_with_a_warning(make_limiter: Any, evicting: Any) -> None:
    """evicting_redis="warn" runs anyway and logs the risk once."""
    lim = make_limiter(evicting_redis="warn")
    with capture_logs() as logs:
        lim.apply_policy(Policy.from_toml(POLICY))
        lim.reserve("p", "gpt-4o", est_tokens=10).release()
    assert [e["event"] for e in logs if e["event"].startswith("prism.redis")] == [
        "prism.redis.evicting"
    ]


def test_open_mode_allows_degraded_on_an_evicting_redis(make_limiter: Any, evicting: Any) -> None:
    """The refusal is a backend failure, so failure_mode="open" answers degraded."""
    lim = make_limiter(failure_mode="open")
    r = lim.reserve("p", "gpt-4o", est_tokens=10)
    assert r.decision.degraded
