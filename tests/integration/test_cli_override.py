"""``override grant|revoke|list`` against a real Redis: audited, visible, expiring."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _cli import cli
from _helpers import audit

from prism_limiter import Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini"]

[[projects.search.budgets]]
id = "monthly"
usd = 1.0

[[projects.search.budgets]]
id = "per-customer"
usd = 0.5
period = "day"
split_by = "customer"
"""


@pytest.fixture
def lim(redis_url: str) -> Any:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC))
        yield lim


def test_grant_list_revoke(redis_url: str, rclient: Any, lim: Limiter) -> None:
    done = cli(
        "override",
        "grant",
        "search",
        "monthly",
        "--usd",
        "100",
        "--ttl",
        "7d",
        "--requested-by",
        "alice",
        "--approved-by",
        "cfo@corp",
        "--reason",
        "launch week",
        url=redis_url,
    )
    assert done.returncode == 0, done.stderr
    assert "granted search monthly: +$100.00 until" in done.stdout
    [entry] = audit(rclient, "search", "override.granted")
    assert entry["approved_by"] == "cfo@corp" and entry["requested_by"] == "alice"
    assert entry["reason"] == "launch week"
    data = json.loads(
        cli(
            "override",
            "grant",
            "search",
            "per-customer",
            "--split",
            "org:42",
            "--usd",
            "5",
            "--ttl",
            "3600",
            "--requested-by",
            "support",
            "--approved-by",
            "lead",
            "--reason",
            "ticket 1234",
            "--json",
            url=redis_url,
        ).stdout
    )
    assert data["split_value"] == "org:42" and data["extra_usd"] == 5.0
    [state] = [s for s in lim.status("search") if s.budget == "monthly"]
    assert state.override_usd == 100.0

    listed = json.loads(cli("override", "list", "--json", url=redis_url).stdout)["overrides"]
    assert [(o["budget"], o.get("split_value"), o["extra_usd"]) for o in listed] == [
        ("monthly", None, 100.0),
        ("per-customer", "org:42", 5.0),
    ]
    assert listed[0]["approved_by"] == "cfo@corp" and listed[1]["reason"] == "ticket 1234"
    assert all(o["state"] == "active" for o in listed)
    table = cli("override", "list", "search", url=redis_url).stdout
    assert "per-customer [org:42]" in table and "cfo@corp" in table and "7.0d" in table

    done = cli(
        "override",
        "revoke",
        "search",
        "monthly",
        "--actor",
        "cfo@corp",
        "--reason",
        "launch over",
        url=redis_url,
    )
    assert done.returncode == 0, done.stderr
    assert "revoked search monthly" in done.stdout
    assert audit(rclient, "search", "override.revoked")[0]["reason"] == "launch over"
    again = json.loads(
        cli(
            "override",
            "revoke",
            "search",
            "monthly",
            "--actor",
            "cfo@corp",
            "--reason",
            "again",
            "--json",
            url=redis_url,
        ).stdout
    )
    assert again == {"revoked": False}
    listed = json.loads(cli("override", "list", "--json", url=redis_url).stdout)["overrides"]
    assert [o["budget"] for o in listed] == ["per-customer"]


def test_ended_overrides_are_listed_on_request(redis_url: str, rclient: Any, lim: Limiter) -> None:
    lim.grant_override(
        "search", "monthly", usd=1, ttl_s=60, requested_by="a", approved_by="b", reason="r"
    )
    lim.revoke_override("search", "monthly", actor="b", reason="done")
    assert json.loads(cli("override", "list", "--json", url=redis_url).stdout) == {"overrides": []}
    [ended] = json.loads(cli("override", "list", "--ended", "--json", url=redis_url).stdout)[
        "overrides"
    ]
    assert ended["state"] == "revoked" and ended["end_reason"] == "done"


def test_bad_overrides_are_usage_errors(redis_url: str, lim: Limiter) -> None:
    base = [
        "--usd",
        "1",
        "--ttl",
        "1h",
        "--requested-by",
        "a",
        "--approved-by",
        "b",
        "--reason",
        "r",
    ]
    done = cli("override", "grant", "search", "nope", *base, url=redis_url)
    assert done.returncode == 2 and "no budget 'nope'" in done.stderr
    done = cli("override", "grant", "search", "per-customer", *base, url=redis_url)
    assert done.returncode == 2 and "split" in done.stderr
    assert (
        cli(
            "override",
            "grant",
            "search",
            "monthly",
            "--usd",
            "1",
            "--ttl",
            "soon",
            "--requested-by",
            "a",
            "--approved-by",
            "b",
            "--reason",
            "r",
            url=redis_url,
        ).returncode
        == 2
    )
    assert (
        cli(
            "override", "grant", "search", "monthly", "--usd", "1", "--ttl", "1h", url=redis_url
        ).returncode
        == 2
    )  # --actor and --reason are required
