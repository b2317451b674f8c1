"""Records from a real run encode to JSON and decode back; ``to_dict()`` is plain and None-free."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import pytest

from prism_limiter import BudgetExceeded, ModelNotAllowed, Policy

pytestmark = pytest.mark.usefixtures("rclient")

CHAT = {"feature": "chat", "customer": "acme"}


def _nones(value: Any) -> list[Any]:
    """Every None anywhere in plain data, as a key or as a value."""
    if isinstance(value, dict):
        return [k for k in value if k is None] + [n for v in value.values() for n in _nones(v)]
    if isinstance(value, list):
        return [n for v in value for n in _nones(v)]
    return [value] if value is None else []


def _round_trip(record: Any) -> dict[str, Any]:
    """Both encodings of ``record`` decode back to it; returns its ``to_dict()``."""
    kind = type(record)
    assert msgspec.json.decode(msgspec.json.encode(record), type=kind) == record
    plain: dict[str, Any] = record.to_dict()
    assert _nones(plain) == []
    assert json.loads(json.dumps(plain)) == plain  # only JSON types (the stdlib agrees)
    assert msgspec.convert(plain, kind) == record  # nothing lost by leaving out the None fields
    return plain


def test_reserve_settle_status_usage_records_round_trip(limiter: Any, policy: Policy) -> None:
    """Decision (allowed, with budgets and warnings; denied), Settlement, BudgetState,
    UsageReport and Override from one run: JSON there and back."""
    limiter.apply_policy(policy)
    big = limiter.reserve("search", "gpt-4o-mini", est_tokens=10, tags={"team": "a"})
    big.settle(input_tokens=4_000_000, output_tokens=0)  # $0.60 of the $1 month: warn at 50%

    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=1000, max_output_tokens=100, tags=CHAT)
    decision = _round_trip(r.decision)
    assert decision["allowed"] is True and "reason" not in decision
    assert decision["remaining_usd"] == r.decision.remaining_usd
    assert datetime.fromisoformat(decision["expires_at"]) == r.decision.expires_at
    assert [b["budget"] for b in decision["budgets"]] == ["monthly", "per-customer"]
    assert "split_value" not in decision["budgets"][0]  # the monthly budget is not split
    assert decision["budgets"][1]["split_value"] == "acme"
    assert decision["warnings"][0]["threshold"] == 0.5

    settlement = _round_trip(r.settle(input_tokens=900, output_tokens=80))
    assert settlement["first"] is True and settlement["cost_usd"] > 0

    with pytest.raises(BudgetExceeded) as denied:
        limiter.reserve("search", "gpt-4o-mini", est_tokens=100_000, tags=CHAT)
    denial = _round_trip(denied.value.decision)
    assert denial["reason"] == "budget" and denial["budget"] == "per-customer"
    assert denial["split_value"] == "acme" and "limit" not in denial  # no rate limit

    with pytest.raises(ModelNotAllowed) as refused:
        limiter.reserve("search", "claude-opus-4", est_tokens=10)
    refusal = _round_trip(refused.value.decision)
    assert refusal["reason"] == "model-denied" and "remaining_usd" not in refusal

    states = {s.budget: _round_trip(s) for s in limiter.status("search")}
    assert "split_value" not in states["monthly"] and states["per-customer"]["split_value"]
    datetime.fromisoformat(states["monthly"]["resets_at"])

    override = _round_trip(
        limiter.grant_override(
            "search", "monthly", usd=1, ttl_s=60, requested_by="ann", approved_by="cfo", reason="r"
        )
    )
    assert override["approved_by"] == "cfo" and override["requested_by"] == "ann"
    assert "split_value" not in override and override["state"] == "active"


def test_usage_report_keeps_untagged_requests_in_json(limiter: Any, policy: Policy) -> None:
    """by_tag reports requests without a tag key under "" (never a tag value), in JSON too:
    each breakdown still sums to the total after a round trip."""
    limiter.apply_policy(policy)
    for tags in ({"team": "a", "feature": "search"}, {"team": "b"}, {"team": "a"}):
        limiter.reserve("search", "gpt-4o-mini", est_tokens=100, tags=tags).settle(
            input_tokens=100, output_tokens=10
        )
    report = limiter.usage("search")
    plain = _round_trip(report)
    assert set(plain["by_tag"]["feature"]) == {"search", ""}
    assert plain["by_tag"]["feature"][""]["requests"] == 2
    assert "" not in plain["by_tag"]["team"]
    for rows in plain["by_tag"].values():
        assert sum(row["requests"] for row in rows.values()) == plain["total"]["requests"] == 3
