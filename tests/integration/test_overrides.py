"""Overrides: approved, audited, expiring raises of a budget cap."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit

from prism_limiter import BudgetExceeded, InvalidRequest, Policy

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["*"]
default_max_output_tokens = 0
[[projects.p.budgets]]
id = "daily"
usd = 0.001
period = "day"
[[projects.p.budgets]]
id = "per-customer"
usd = 1
split_by = "customer"
"""
)


def _fill(limiter: Any) -> None:
    limiter.reserve("p", "gpt-4o", est_tokens=400).settle(input_tokens=400, output_tokens=0)


def test_grant_lets_requests_through_and_each_use_is_audited(limiter: Any, rclient: Any) -> None:
    """Past the cap only with an override; override.granted once, override.used per use."""
    limiter.apply_policy(POLICY)
    _fill(limiter)  # $0.001 spent: the cap is reached
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=100)
    grant = limiter.grant_override(
        "p", "daily", usd=0.0005, ttl_s=60, actor="cfo@corp", reason="launch day"
    )
    assert grant.extra_usd == 0.0005 and grant.actor == "cfo@corp"
    r = limiter.reserve("p", "gpt-4o", est_tokens=100)
    r.settle(input_tokens=100, output_tokens=0)
    daily = next(s for s in limiter.status("p") if s.budget == "daily")
    assert daily.override_usd == 0.0005 and daily.cap_usd == pytest.approx(0.0015)
    [granted] = audit(rclient, "p", "override.granted")
    assert granted["actor"] == "cfo@corp" and granted["reason"] == "launch day"
    assert [u["rid"] for u in audit(rclient, "p", "override.used")] == [r.id]
    with pytest.raises(BudgetExceeded):  # the override has its own limit
        limiter.reserve("p", "gpt-4o", est_tokens=1000)


def test_override_expires_on_the_server_clock(limiter: Any) -> None:
    """An override lets requests through while in force; a short grant replacing it ends at its
    own expiry on the server clock, and the cap is back."""
    limiter.apply_policy(POLICY)
    _fill(limiter)
    limiter.grant_override("p", "daily", usd=1, ttl_s=60, actor="a", reason="long")
    limiter.reserve("p", "gpt-4o", est_tokens=1).release()
    limiter.grant_override("p", "daily", usd=1, ttl_s=0.1, actor="a", reason="short")
    time.sleep(0.15)
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=1)


def test_revoke(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(POLICY)
    _fill(limiter)
    limiter.grant_override("p", "daily", usd=1, ttl_s=60, actor="a", reason="r")
    assert limiter.revoke_override("p", "daily", actor="b", reason="abuse") is True
    assert limiter.revoke_override("p", "daily", actor="b", reason="again") is False
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=1)
    assert [e["actor"] for e in audit(rclient, "p", "override.revoked")] == ["b", "b"]


def test_split_budget_override_targets_one_value(limiter: Any) -> None:
    limiter.apply_policy(POLICY)
    limiter.grant_override(
        "p", "per-customer", split_value="org:42", usd=2, ttl_s=60, actor="a", reason="r"
    )
    per = {s.split_value: s for s in limiter.status("p") if s.budget == "per-customer"}
    assert per["org:42"].override_usd == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": "nope"},
        {"budget": "per-customer"},  # split budget without split_value
        {"budget": "daily", "split_value": "x"},
        {"budget": "daily", "usd": -1},
        {"budget": "daily", "ttl_s": 0},
        {"budget": "daily", "actor": ""},
        {"budget": "daily", "reason": "a\nb"},
    ],
)
def test_bad_override_is_refused(limiter: Any, kwargs: dict[str, Any]) -> None:
    limiter.apply_policy(POLICY)
    args: dict[str, Any] = {"usd": 1, "ttl_s": 60, "actor": "a", "reason": "r", **kwargs}
    budget = args.pop("budget")
    with pytest.raises(InvalidRequest):
        limiter.grant_override("p", budget, **args)
