"""Policy lives in Redis, versioned; every worker follows a change on its next request."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import audit

from prism_limiter import BudgetExceeded, ModelNotAllowed, Policy

pytestmark = pytest.mark.usefixtures("rclient")


def test_change_takes_effect_on_the_next_request_of_every_worker(
    make_limiter: Any, rclient: Any
) -> None:
    """Worker B cached version 1; A applies version 2; B's next reserve uses version 2."""
    a, b = make_limiter(), make_limiter()
    a.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['gpt-4o']\n"))
    b.reserve("p", "gpt-4o", est_tokens=1).release()
    a.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['gpt-4o-mini']\n"))
    with pytest.raises(ModelNotAllowed):
        b.reserve("p", "gpt-4o", est_tokens=1)
    b.reserve("p", "gpt-4o-mini", est_tokens=1).release()
    applied = audit(rclient, "p", "policy.applied")
    assert [e["version"] for e in applied] == ["1", "2"]


def test_lowered_cap_applies_immediately(make_limiter: Any) -> None:
    """A cap lowered by another worker blocks this worker's very next request."""
    a, b = make_limiter(), make_limiter()
    budget = "[[projects.p.budgets]]\nid='m'\nusd={}\n"
    a.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n" + budget.format(10)))
    b.reserve("p", "gpt-4o", est_tokens=1000).release()
    a.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n" + budget.format(0.0001)))
    with pytest.raises(BudgetExceeded):
        b.reserve("p", "gpt-4o", est_tokens=1000)


def test_actor_is_audited(limiter: Any, rclient: Any) -> None:
    """policy.applied records the version and the actor."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\n"), actor="alice@platform")
    [entry] = audit(rclient, "p", "policy.applied")
    assert entry["actor"] == "alice@platform" and entry["version"] == "1"


def test_no_policy_is_denied(limiter: Any, rclient: Any) -> None:
    """A project the policy does not list, with no [defaults], is denied with no-policy."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n"))
    with pytest.raises(ModelNotAllowed) as exc:
        limiter.reserve("stranger", "gpt-4o", est_tokens=1)
    assert exc.value.decision.reason == "no-policy"
    assert audit(rclient, "stranger", "model.denied")[0]["reason"] == "no-policy"


def test_nothing_applied_yet_is_denied(limiter: Any) -> None:
    """Before any policy exists every request is denied (closed by default)."""
    with pytest.raises(ModelNotAllowed):
        limiter.reserve("p", "gpt-4o", est_tokens=1)


def test_defaults_apply_to_unlisted_projects_and_follow_changes(
    make_limiter: Any, rclient: Any
) -> None:
    """[defaults] covers unlisted projects; a later change of defaults reaches them too."""
    a, b = make_limiter(), make_limiter()
    a.apply_policy(Policy.from_toml("[defaults]\nallow_models=['gpt-4o']\n"))
    b.reserve("newcomer", "gpt-4o", est_tokens=1).release()
    a.apply_policy(Policy.from_toml("[defaults]\nallow_models=['gpt-4o-mini']\n"))
    with pytest.raises(ModelNotAllowed):
        b.reserve("newcomer", "gpt-4o", est_tokens=1)


def test_removed_project_loses_its_policy(make_limiter: Any) -> None:
    """A project dropped from the document falls back to defaults (or no policy)."""
    a = make_limiter()
    a.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n"))
    a.reserve("p", "gpt-4o", est_tokens=1).release()
    a.apply_policy(Policy.from_toml("[projects.other]\nallow_models=['*']\n"))
    with pytest.raises(ModelNotAllowed) as exc:
        a.reserve("p", "gpt-4o", est_tokens=1)
    assert exc.value.decision.reason == "no-policy"
