"""Retention by time (never by count) and floods of identical decisions aggregated, each
decision still counted."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit

from prism_limiter import InvalidRequest, Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["gpt-4o", "mystery-model"]
on_unknown_price = "allow"
default_max_output_tokens = 0
[[projects.p.budgets]]
id = "tiny"
usd = 0.0000001
"""
)
WINDOW_S = 1.0  # lib/audit.lua AGG_WINDOW_MS


def _deny(limiter: Any, n: int, **tags: str) -> list[str]:
    rids = []
    for _ in range(n):
        r = limiter.try_reserve("p", "gpt-4o", est_tokens=1000, tags=tags)
        assert not r.allowed
        rids.append(r.id)
    return rids


def _windows_ended(limiter: Any) -> None:
    """Wait until every flood window has ended (a lower bound), then let housekeeping write
    their counts."""
    time.sleep(WINDOW_S + 0.05)
    limiter.sweep("p")


def _bound(entries: list[dict[str, str]]) -> int:
    """At most two entries per window (the first decision, and the count of the rest), and a
    window per second of decisions: the most entries a flood may have, at any speed."""
    span_ms = int(entries[-1]["ts_ms"]) - int(entries[0]["ts_ms"])
    return 2 * (span_ms // 1000 + 2)


def test_a_flood_of_identical_denials_is_counted_in_few_entries(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(POLICY)
    rids = _deny(limiter, 40, team="a")
    other = _deny(limiter, 5, team="b")
    _windows_ended(limiter)
    blocked = audit(rclient, "p", "budget.blocked")
    a = [e for e in blocked if e["tags"] == '{"team":"a"}']
    b = [e for e in blocked if e["tags"] == '{"team":"b"}']
    assert sum(int(e["count"]) for e in a) == 40 and sum(int(e["count"]) for e in b) == 5
    assert len(a) <= _bound(a) and len(a) < 40
    assert a[0]["count"] == "1" and a[0]["rid"] == rids[0]  # the first is written at once
    last = a[-1]  # a count carries the last decision's rid and the span it covers
    assert last["rid"] == rids[-1] and int(last["count"]) > 1
    assert int(last["first_ts_ms"]) <= int(last["last_ts_ms"]) <= int(last["ts_ms"])
    assert b[-1]["rid"] == other[-1]
    assert limiter.verify_audit("p").ok


def test_a_count_is_written_by_the_next_script_past_its_window(limiter: Any, rclient: Any) -> None:
    """No sweep needed: the next entry of any kind, or the reserve whose housekeeping is
    due, writes the counts of the windows that have ended first."""
    limiter.apply_policy(POLICY)
    _deny(limiter, 10, team="a")
    time.sleep(WINDOW_S + 0.05)
    limiter.try_reserve("p", "claude-opus-4", est_tokens=1)  # model.denied: another entry
    events = [(e["event"], e["count"]) for e in audit(rclient, "p") if "count" in e]
    assert events == [("budget.blocked", "1"), ("budget.blocked", "9"), ("model.denied", "1")]


def test_unknown_prices_and_model_denials_are_aggregated_too(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(
        Policy.from_toml(
            '[projects.p]\nallow_models = ["mystery-model"]\non_unknown_price = "allow"\n'
        )
    )
    for _ in range(20):
        limiter.reserve("p", "mystery-model", est_tokens=1).release()
        limiter.try_reserve("p", "claude-opus-4", est_tokens=1)
    _windows_ended(limiter)
    for event in ("price.unknown", "model.denied"):
        entries = audit(rclient, "p", event)
        assert sum(int(e["count"]) for e in entries) == 20
        assert len(entries) <= _bound(entries)


def test_retention_is_by_time_never_by_count(redis_url: str, rclient: Any) -> None:
    """Entries older than the retention go (approximately: whole stream nodes of 100
    entries); a flood of recent ones, however large, keeps every one."""
    key = "prism:{p}:audit"
    for i in range(1, 301):  # written long ago (ids 1 ms, 2 ms, ... after the epoch)
        rclient.xadd(key, {"event": "old", "n": i}, id=f"{i}-0")
    lim = Limiter.from_url(redis_url, audit_retention_days=1)
    lim.apply_policy(POLICY)
    old = [e for e in audit(rclient, "p") if e["event"] == "old"]
    assert len(old) < 300  # trimmed by time
    for n in range(1200):  # distinct callers: 1200 entries, not aggregated
        lim.try_reserve("p", "gpt-4o", est_tokens=1000, tags={"n": str(n)})
    blocked = audit(rclient, "p", "budget.blocked")
    assert len(blocked) == 1200 and blocked[-1]["seq"] == "1201"
    lim.close()
    with pytest.raises(InvalidRequest):
        Limiter.from_url(redis_url, audit_retention_days=0)


def test_a_retention_longer_than_the_epoch_keeps_everything(redis_url: str, rclient: Any) -> None:
    """A retention of a century (longer than the server clock's age: the trim bound would be
    before 1970) trims nothing and fails nothing: every decision is still written."""
    lim = Limiter.from_url(redis_url, audit_retention_days=36_500)
    lim.apply_policy(POLICY)
    lim.try_reserve("p", "gpt-4o", est_tokens=1000)
    assert [e["event"] for e in audit(rclient, "p")] == ["policy.applied", "budget.blocked"]
    lim.close()


@pytest.mark.parametrize(
    "setting",
    [
        {"usage_retention_days": 0},
        {"usage_retention_days": -1},
        {"usage_retention_days": 1.5},
        {"record_retention_s": -1},
        {"record_retention_s": "1"},
    ],
    ids=repr,
)
def test_retention_settings_are_checked(redis_url: str, setting: dict[str, Any]) -> None:
    """A usage retention of 0 days would expire each day's attribution as it is written: the
    settings are refused, like an audit retention of 0."""
    with pytest.raises(InvalidRequest):
        Limiter.from_url(redis_url, **setting)
