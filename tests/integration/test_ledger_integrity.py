"""Ordinary calls that once bricked a project or booked past a cap, each pinned by a test."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit, budget_fields, held_nano, rate_state, spent_nano

from prism_limiter import InvalidRequest, Policy, TokenUsage

pytestmark = pytest.mark.usefixtures("rclient")

RATE_POLICY = """
[projects.p]
allow_models = ["*"]
on_unknown_price = "allow"

[projects.p.prices."free-model"]
input_mtok = 0.0
output_mtok = 0.0

[[projects.p.budgets]]
id = "b"
usd = 10.0

[[projects.p.rate_limits]]
id = "per-customer"
rpm = 600
split_by = "customer"

[[projects.p.rate_limits]]
id = "slots"
max_concurrent = 5
"""


def _make_rate_instances_due(rclient: Any, project: str = "p") -> None:
    """Age every rate-limit instance in the cleanup index, as if its idle time had passed."""
    bidx = f"prism:{{{project}}}:bidx"
    members = [m for m in rclient.zrange(bidx, 0, -1) if m.startswith(b"r|")]
    if members:
        rclient.zadd(bidx, dict.fromkeys(members, 0))


def _buckets_full_again() -> None:
    # rpm 600 refills one request in 100 ms on the server clock; waiting longer is harmless.
    time.sleep(0.2)


def test_live_hold_keeps_its_rate_instance(limiter: Any, rclient: Any) -> None:
    """Housekeeping never drops a rate instance a live hold names, even without
    max_concurrent; the hold then settles cleanly."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    a = limiter.reserve(
        "p", "gpt-4o", est_tokens=100, max_output_tokens=10, ttl_s=60, tags={"customer": "a"}
    )
    _buckets_full_again()
    _make_rate_instances_due(rclient)
    b = limiter.reserve("p", "gpt-4o", est_tokens=100, max_output_tokens=10, tags={"customer": "b"})
    b.settle(input_tokens=100, output_tokens=10)
    s = a.settle(input_tokens=100, output_tokens=10)
    assert s.first
    assert held_nano(rclient, "p", "b") == 0
    assert spent_nano(rclient, "p", "b") == round((s.cost_usd + s.cost_usd) * 1e9)
    assert limiter.status("p")[0].held_usd == 0


def test_late_settle_after_instance_was_dropped(limiter: Any, rclient: Any) -> None:
    """A settle after a release, once the idle rate instances are gone, books once and
    recreates nothing broken."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    r = limiter.reserve("p", "gpt-4o", est_tokens=100, max_output_tokens=10, tags={"customer": "a"})
    r.release()
    _buckets_full_again()
    _make_rate_instances_due(rclient)
    limiter.status("p")
    assert not [f for f in budget_fields(rclient, "p") if f.startswith("r:")]
    s = limiter.settle("p", r.id, input_tokens=100, output_tokens=10)
    assert s.late and s.first
    again = limiter.settle("p", r.id, input_tokens=100, output_tokens=10)
    assert not again.first
    assert spent_nano(rclient, "p", "b") == round(s.cost_usd * 1e9)
    assert held_nano(rclient, "p", "b") == 0
    fields = budget_fields(rclient, "p")
    # The correction took the tokens from a bucket rebuilt from the hold's own config.
    assert fields["r:per-customer=a|cfg"] == "600,0,0,1000"
    limiter.reserve("p", "gpt-4o", est_tokens=1, tags={"customer": "a"}).release()


@pytest.mark.parametrize("how", ["settle", "release", "expire"])
def test_zero_hold_ends_cleanly(limiter: Any, rclient: Any, how: str) -> None:
    """A hold of $0 (a free model, zero tokens) settles, releases and expires like any other."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    ttl = 0.05 if how == "expire" else 60
    r = limiter.reserve(
        "p", "free-model", est_tokens=0, max_output_tokens=0, ttl_s=ttl, tags={"customer": "z"}
    )
    assert r.decision.hold_usd == 0
    if how == "settle":
        assert r.settle(input_tokens=0, output_tokens=0).cost_usd == 0
    elif how == "release":
        assert r.release()
    else:
        time.sleep(0.1)  # past the lease on the server clock: a lower bound, not a window
        assert limiter.sweep("p") == 1
    assert rclient.zcard("prism:{p}:leases") == 0
    assert rate_state(rclient, "p", "r:slots")["holds"] == 0
    assert limiter.status("p")[0].held_usd == 0
    limiter.reserve("p", "gpt-4o", est_tokens=1, tags={"customer": "z"}).release()


def test_unknown_price_allowed_at_zero_settles(limiter: Any, rclient: Any) -> None:
    """A model with no price under on_unknown_price = "allow" holds $0 and settles."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    r = limiter.reserve("p", "my-self-hosted-llm", est_tokens=50, tags={"customer": "z"})
    assert r.decision.hold_usd == 0
    assert r.settle(input_tokens=50, output_tokens=50).cost_usd == 0
    assert held_nano(rclient, "p", "b") == 0


@pytest.mark.parametrize("end", ["release", "settle", "expire"])
def test_ended_id_is_not_reopened(limiter: Any, rclient: Any, end: str) -> None:
    """A reserve with the id of a hold that already ended is refused, not replayed open."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    ttl = 0.05 if end == "expire" else 60
    r = limiter.reserve("p", "gpt-4o", est_tokens=100, reservation_id="job-42", ttl_s=ttl)
    if end == "release":
        r.release()
    elif end == "settle":
        r.settle(input_tokens=100, output_tokens=10)
    else:
        time.sleep(0.1)
        limiter.sweep("p")
    before = budget_fields(rclient, "p")
    with pytest.raises(InvalidRequest, match="already ended"):
        limiter.reserve("p", "gpt-4o", est_tokens=100, reservation_id="job-42")
    assert budget_fields(rclient, "p") == before


def test_lost_reply_retry_still_replays(limiter: Any, rclient: Any) -> None:
    """A retry of a live hold's reserve (its reply was lost) replays it and holds nothing more."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    first = limiter.reserve("p", "gpt-4o", est_tokens=100, reservation_id="job-7")
    again = limiter.reserve("p", "gpt-4o", est_tokens=100, reservation_id="job-7")
    assert again.decision.replayed and again.open
    assert held_nano(rclient, "p", "b") == round(first.decision.hold_usd * 1e9)


BIG_POLICY = """
[projects.big]
allow_models = ["*"]
[projects.big.prices."dear-model"]
input_mtok = 1000000.0
output_mtok = 1000000.0
[[projects.big.budgets]]
id = "b"
usd = 5000000.0
"""


def test_large_amounts_are_exact(limiter: Any, rclient: Any) -> None:
    """Holds of $100,000 and more are written as exact integers: retry, release and settle
    leave no nano-dollar behind."""
    limiter.apply_policy(Policy.from_toml(BIG_POLICY))
    r = limiter.reserve(
        "big", "dear-model", est_tokens=123_456, max_output_tokens=789, reservation_id="big-1"
    )
    hold = 124_245 * 10**9
    assert held_nano(rclient, "big", "b") == hold
    again = limiter.reserve(
        "big", "dear-model", est_tokens=123_456, max_output_tokens=789, reservation_id="big-1"
    )
    assert again.decision.replayed and again.decision.hold_usd == 124_245.0
    assert r.release()
    assert held_nano(rclient, "big", "b") == 0
    s = limiter.settle("big", "big-1", input_tokens=111_111, output_tokens=1)
    assert spent_nano(rclient, "big", "b") == 111_112 * 10**9 == round(s.cost_usd * 1e9)


def test_negative_or_fractional_usage_is_refused(limiter: Any, rclient: Any) -> None:
    """TokenUsage is validated before any I/O: it cannot wipe spend or abort a script."""
    limiter.apply_policy(Policy.from_toml(RATE_POLICY))
    r = limiter.reserve("p", "gpt-4o", est_tokens=100)
    with pytest.raises(InvalidRequest):
        r.settle(TokenUsage(input_tokens=-10_000_000, output_tokens=0))
    with pytest.raises(InvalidRequest):
        r.settle(TokenUsage(input_tokens=1000.5, output_tokens=0))  # type: ignore[arg-type]
    assert r.open and r.settle(input_tokens=100, output_tokens=1).first
    assert not audit(rclient, "p", "settle.late")


CACHE_POLICY = """
[projects.c]
allow_models = ["claude-*"]
[[projects.c.budgets]]
id = "b"
usd = 1.0
"""


def test_cache_writes_cannot_push_spend_past_the_cap(limiter: Any, rclient: Any) -> None:
    """Exact estimates whose input is all written to the one-hour cache (2x input) stay under
    the cap: the hold prices possible cache writes at the dearest input class."""
    limiter.apply_policy(Policy.from_toml(CACHE_POLICY))
    admitted = 0
    while True:
        r = limiter.try_reserve("c", "claude-haiku-4-5", est_tokens=10_000, max_output_tokens=1000)
        if not r.allowed:
            break
        admitted += 1
        s = r.settle(
            input_tokens=10_000,
            output_tokens=1000,
            cache_write_tokens=10_000,
            cache_write_1h_tokens=10_000,
        )
        assert not s.over_estimate
    assert admitted == 40  # $0.025 each: 10k x $2/MTok (1h write) + 1k x $5/MTok
    assert spent_nano(rclient, "c", "b") <= 10**9
    assert not audit(rclient, "c", "settle.over_estimate")


def test_declared_cache_writes_shrink_the_hold(limiter: Any) -> None:
    """A caller (or the policy) that declares how much input may be cached gets a smaller hold."""
    limiter.apply_policy(Policy.from_toml(CACHE_POLICY))
    worst = limiter.reserve("c", "claude-haiku-4-5", est_tokens=10_000, max_output_tokens=0)
    none = limiter.reserve(
        "c", "claude-haiku-4-5", est_tokens=10_000, max_output_tokens=0, max_cache_write_tokens=0
    )
    part = limiter.reserve(
        "c", "claude-haiku-4-5", est_tokens=10_000, max_output_tokens=0, max_cache_write_tokens=4000
    )
    assert worst.decision.hold_usd == 0.02
    assert none.decision.hold_usd == 0.01
    assert part.decision.hold_usd == 0.014
    limiter.apply_policy(
        Policy.from_toml(CACHE_POLICY.replace("[[", "default_max_cache_write_tokens = 0\n[[", 1))
    )
    by_policy = limiter.reserve("c", "claude-haiku-4-5", est_tokens=10_000, max_output_tokens=0)
    assert by_policy.decision.hold_usd == 0.01


def test_status_reports_large_caps_exactly(limiter: Any) -> None:
    """A cap of a million dollars is stored and reported to the nano-dollar."""
    limiter.apply_policy(Policy.from_toml(BIG_POLICY))
    limiter.reserve("big", "dear-model", est_tokens=1, max_output_tokens=0).release()
    [state] = limiter.status("big")
    assert state.cap_usd == 5_000_000.0
