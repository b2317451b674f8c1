"""``policy validate|diff|apply|show`` run as a subprocess against a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _cli import cli
from _helpers import audit

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini"]

[[projects.search.budgets]]
id = "monthly"
usd = 5.0
period = "month"

[projects.billing]
allow_models = ["gpt-4o-mini"]
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(DOC)
    return path


def test_validate_ok_and_bad(tmp_path: Path, policy_file: Path) -> None:
    done = cli("policy", "validate", str(policy_file))
    assert done.returncode == 0, done.stderr
    assert "2 project(s) (billing, search), 1 budget(s)" in done.stdout
    data = json.loads(cli("policy", "validate", str(policy_file), "--json").stdout)
    assert data == {
        "valid": True,
        "projects": ["billing", "search"],
        "defaults": False,
        "budgets": 1,
        "rate_limits": 0,
    }
    bad = tmp_path / "bad.toml"
    bad.write_text(DOC.replace('period = "month"', 'period = "fortnight"'))
    done = cli("policy", "validate", str(bad))
    assert done.returncode == 2
    assert "projects.search.budgets[0].period" in done.stderr
    assert "one of 'day', 'week'" in done.stderr
    assert cli("policy", "validate", str(tmp_path / "missing.toml")).returncode == 2


def test_apply_diff_show(redis_url: str, rclient: Any, policy_file: Path) -> None:
    done = cli("policy", "diff", str(policy_file), "--exit-code", url=redis_url)
    assert done.returncode == 1  # everything would be added
    assert "+ budget monthly: $5 per month (UTC)" in done.stdout
    done = cli("policy", "apply", str(policy_file), "--actor", "alice", url=redis_url)
    assert done.returncode == 0, done.stderr
    assert "applied policy version 1 (actor alice)" in done.stdout
    assert audit(rclient, "search", "policy.applied")[0]["actor"] == "alice"
    done = cli("policy", "diff", str(policy_file), "--exit-code", url=redis_url)
    assert done.returncode == 0
    assert "no changes against the stored policy (version 1)" in done.stdout

    changed = policy_file.parent / "changed.toml"
    changed.write_text(
        DOC.replace("usd = 5.0", "usd = 7.5").replace('["gpt-4o-mini"]\n\n[[', '["gpt-4o"]\n\n[[')
    )
    data = json.loads(cli("policy", "diff", str(changed), "--json", url=redis_url).stdout)
    assert data["version"] == 1
    assert data["changes"] == [
        {"scope": "search", "kind": "added", "item": "allow_models", "after": "gpt-4o"},
        {"scope": "search", "kind": "removed", "item": "allow_models", "before": "gpt-4o-mini"},
        {
            "scope": "search",
            "kind": "changed",
            "item": "budget monthly",
            "field": "usd",
            "before": 5.0,
            "after": 7.5,
        },
    ]
    only_search = policy_file.parent / "search.toml"
    only_search.write_text(DOC.split("[projects.billing]", maxsplit=1)[0])
    done = cli("policy", "diff", str(only_search), "--prune", url=redis_url)
    assert "- project (falls back to no policy)" in done.stdout
    data = json.loads(
        cli("policy", "apply", str(only_search), "--prune", "--json", url=redis_url).stdout
    )
    assert data["version"] == 2
    assert data["removed"] == ["billing"]

    shown = json.loads(cli("policy", "show", "--json", url=redis_url).stdout)
    assert shown["version"] == 2
    assert list(shown["document"]["projects"]) == ["search"]
    done = cli("policy", "show", "search", url=redis_url)
    assert done.returncode == 0
    assert "monthly" in done.stdout and "$5.00" in done.stdout
    done = cli("policy", "show", "billing", url=redis_url)
    assert done.returncode == 1
    assert "has no policy" in done.stdout


def test_apply_refuses_a_bad_file_and_changes_nothing(
    redis_url: str, rclient: Any, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[projects.search]\nallow_models = 3\n")
    done = cli("policy", "apply", str(bad), url=redis_url)
    assert done.returncode == 2
    assert "allow_models" in done.stderr
    assert rclient.keys("*") == []
