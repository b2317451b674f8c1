"""Policy lives in Redis, versioned; every worker follows a change on its next request."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import audit, spent_nano

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
    """A project a pruning document drops falls back to defaults (or no policy)."""
    a = make_limiter()
    a.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n"))
    a.reserve("p", "gpt-4o", est_tokens=1).release()
    change = a.apply_policy(Policy.from_toml("[projects.other]\nallow_models=['*']\n"), prune=True)
    assert change.removed == ("p",)
    with pytest.raises(ModelNotAllowed) as exc:
        a.reserve("p", "gpt-4o", est_tokens=1)
    assert exc.value.decision.reason == "no-policy"


TEAM_A = "[projects.a]\nallow_models = ['gpt-4o']\n"
TEAM_B = "[projects.b]\nallow_models = ['gpt-4o-mini']\n"


def test_teams_apply_their_own_files(make_limiter: Any, rclient: Any) -> None:
    """Each team's apply replaces only the projects its file names; both stay in force."""
    team_a, team_b, worker = make_limiter(), make_limiter(), make_limiter()
    team_a.apply_policy(Policy.from_toml(TEAM_A), actor="alice")
    change = team_b.apply_policy(Policy.from_toml(TEAM_B), actor="bob")
    assert change.projects == ("b",) and change.removed == ()
    worker.reserve("a", "gpt-4o", est_tokens=1).release()
    worker.reserve("b", "gpt-4o-mini", est_tokens=1).release()
    team_a.apply_policy(Policy.from_toml(TEAM_A.replace("gpt-4o'", "gpt-4.1'")), actor="alice")
    with pytest.raises(ModelNotAllowed):
        worker.reserve("a", "gpt-4o", est_tokens=1)
    worker.reserve("b", "gpt-4o-mini", est_tokens=1).release()
    [b_entry] = audit(rclient, "b", "policy.applied")
    assert b_entry["actor"] == "bob"


def test_prune_makes_the_document_the_whole_truth(make_limiter: Any, rclient: Any) -> None:
    """prune=True removes every project the document does not list, audited policy.removed."""
    lim = make_limiter()
    lim.apply_policy(Policy.from_toml(TEAM_A))
    lim.apply_policy(Policy.from_toml(TEAM_B))
    change = lim.apply_policy(Policy.from_toml(TEAM_B), prune=True, actor="gitops")
    assert change.removed == ("a",)
    with pytest.raises(ModelNotAllowed):
        lim.reserve("a", "gpt-4o", est_tokens=1)
    [removed] = audit(rclient, "a", "policy.removed")
    assert removed["actor"] == "gitops" and removed["version"] == str(change.version)


def test_remove_policy_removes_one_project(make_limiter: Any, rclient: Any) -> None:
    """remove_policy drops one project (it falls back to [defaults]) and nothing else."""
    lim = make_limiter()
    lim.apply_policy(
        Policy.from_toml(TEAM_A + TEAM_B + "[defaults]\nallow_models = ['claude-*']\n")
    )
    change = lim.remove_policy("a", actor="alice")
    assert change.removed == ("a",)
    lim.reserve("a", "claude-haiku-4-5", est_tokens=1).release()
    with pytest.raises(ModelNotAllowed):
        lim.reserve("a", "gpt-4o", est_tokens=1)
    lim.reserve("b", "gpt-4o-mini", est_tokens=1).release()
    [removed] = audit(rclient, "a", "policy.removed")
    assert removed["reason"] == "defaults"


def test_a_budget_changed_to_total_keeps_its_spend_past_the_old_period_end(
    limiter: Any, rclient: Any
) -> None:
    """A monthly budget made "total" keeps what it has spent. Its instance was indexed for
    housekeeping at the end of the month; when that time comes, housekeeping must not drop
    the instance (and with it the spend) as if a month had ended."""
    budget = (
        "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='b'\nusd=1\nperiod='{}'\n"
    )
    limiter.apply_policy(Policy.from_toml(budget.format("month")))
    limiter.reserve("p", "gpt-4o-mini", est_tokens=1000, max_output_tokens=0).settle(
        input_tokens=1000, output_tokens=0
    )
    limiter.apply_policy(Policy.from_toml(budget.format("total")))
    limiter.reserve("p", "gpt-4o-mini", est_tokens=1000, max_output_tokens=0).settle(
        input_tokens=1000, output_tokens=0
    )
    assert spent_nano(rclient, "p", "b") == 2 * 150_000
    rclient.zadd("prism:{p}:bidx", {"b": 1})  # the end of that month has come
    [state] = limiter.status("p")  # housekeeping runs first
    assert state.spent_usd == pytest.approx(2 * 150_000 / 1e9)
    assert spent_nano(rclient, "p", "b") == 2 * 150_000
    assert rclient.zscore("prism:{p}:bidx", "b") is None  # a total never ends: not indexed
