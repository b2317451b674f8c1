"""Shadow mode: a budget or rate limit that only audits what it would deny."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import audit, budget_state, rate_state

from prism_limiter import BudgetExceeded, Policy, PolicyError

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["gpt-4o"]
default_max_output_tokens = 0
[[projects.p.budgets]]
id = "trial"
usd = 0.001
mode = "shadow"
[[projects.p.budgets]]
id = "hard"
usd = 0.01
[[projects.p.rate_limits]]
id = "slow"
rpm = 1
max_concurrent = 1
mode = "shadow"
"""
)


def test_a_shadow_budget_audits_and_lets_the_request_through(limiter: Any, rclient: Any) -> None:
    """Over a shadow cap the request proceeds: its hold is taken (spend is tracked past the
    cap), budget.would_block is audited, the decision and status say so."""
    limiter.apply_policy(POLICY)
    limiter.reserve("p", "gpt-4o", est_tokens=400).settle(input_tokens=400, output_tokens=0)
    r = limiter.reserve("p", "gpt-4o", est_tokens=400)  # $0.001 more: over "trial"
    assert r.decision.would_block == ("trial",)
    assert budget_state(rclient, "p", "trial")["held"] == 1_000_000
    r.settle(input_tokens=400, output_tokens=0)
    assert budget_state(rclient, "p", "trial")["spent"] == 2_000_000  # past its cap
    [would] = audit(rclient, "p", "budget.would_block")
    assert would["budget"] == "trial" and would["rid"] == r.id and would["cap_usd"] == "0.001000000"
    assert not audit(rclient, "p", "budget.blocked")
    modes = {s.budget: s.mode for s in limiter.status("p")}
    assert modes == {"trial": "shadow", "hard": "enforce"}


def test_an_enforced_denial_wins_and_audits_no_would_block(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(POLICY)
    with pytest.raises(BudgetExceeded) as denied:
        limiter.reserve("p", "gpt-4o", est_tokens=10_000)  # over both
    assert denied.value.decision.budget == "hard"
    assert not audit(rclient, "p", "budget.would_block")
    assert len(audit(rclient, "p", "budget.blocked")) == 1


def test_a_shadow_rate_limit_counts_only_what_enforcement_would_admit(
    limiter: Any, rclient: Any
) -> None:
    """rpm = 1 and max_concurrent = 1 in shadow: three holds at once all go ahead; the second
    and third are audited rate.would_limit and take nothing from the buckets, so the slot
    count never goes negative when they end."""
    limiter.apply_policy(POLICY)
    held = [limiter.reserve("p", "gpt-4o", est_tokens=1, tags={"n": str(i)}) for i in range(3)]
    assert held[0].decision.would_limit == ()
    assert held[1].decision.would_limit == ("slow",) == held[2].decision.would_limit
    assert rate_state(rclient, "p", "r:slow")["holds"] == 1
    would = audit(rclient, "p", "rate.would_limit")
    assert [(e["kind"], e["rid"]) for e in would] == [("rpm", held[1].id), ("rpm", held[2].id)]
    for r in held:
        r.release()
    assert rate_state(rclient, "p", "r:slow")["holds"] == 0
    assert not audit(rclient, "p", "rate.limited")


def test_mode_is_checked() -> None:
    with pytest.raises(PolicyError, match="'enforce', 'shadow'"):
        Policy.from_toml(
            '[projects.p]\nallow_models = ["*"]\n[[projects.p.budgets]]\n'
            'id = "b"\nusd = 1\nmode = "dry-run"\n'
        )
