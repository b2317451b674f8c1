"""``status``: every budget instance with its bar, reset time, warnings and overrides."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _cli import cli

from prism_limiter import Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini"]

[[projects.search.budgets]]
id = "monthly"
usd = 0.002
period = "month"
timezone = "Europe/Paris"
warn_at = [0.5, 0.8]

[[projects.search.budgets]]
id = "per-customer"
usd = 1.0
period = "day"
split_by = "customer"

[projects.quiet]
allow_models = ["gpt-4o-mini"]

[[projects.quiet.budgets]]
id = "daily"
usd = 1.0
period = "day"
"""


@pytest.fixture
def lim(redis_url: str) -> Any:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC))
        yield lim


def _spend(lim: Limiter, customer: str, n: int = 1) -> None:
    for _ in range(n):
        with lim.reserve(
            "search",
            "gpt-4o-mini",
            est_tokens=1000,
            max_output_tokens=100,
            tags={"customer": customer},
        ) as r:
            r.settle(input_tokens=1000, output_tokens=100)  # $0.00021 each


def test_status_of_every_project(redis_url: str, lim: Limiter) -> None:
    _spend(lim, "org:1", 3)
    _spend(lim, "org:2", 2)  # monthly: 5 x $0.00021 = $0.00105 of $0.002: past 50%
    lim.reserve(
        "search", "gpt-4o-mini", est_tokens=1000, max_output_tokens=100, tags={"customer": "org:2"}
    )  # a live hold
    lim.grant_override(
        "search",
        "monthly",
        usd=0.01,
        ttl_s=3600,
        requested_by="alice",
        approved_by="cfo",
        reason="launch",
    )
    done = cli("status", url=redis_url)
    assert done.returncode == 1, done.stderr  # a budget past a warn threshold is a finding
    out = done.stdout
    assert out.index("quiet") < out.index("search")
    assert "per-customer [org:1]" in out and "per-customer [org:2]" in out
    assert "$0.001050" in out  # monthly spent
    assert "$0.000210" in out  # the live hold
    assert "past 50%" in out and "past 80%" not in out
    assert "override monthly: +$0.01 (in the cap) until" in out
    assert "CET" in out  # resets at local midnight in Europe/Paris
    assert "█" in out and "▒" in out and "░" in out

    data = json.loads(cli("status", "search", "--json", url=redis_url).stdout)["budgets"]
    monthly = next(b for b in data if b["budget"] == "monthly")
    assert monthly["warn_passed"] == [0.5]
    assert monthly["spent_usd"] == pytest.approx(0.00105)
    assert monthly["held_usd"] == pytest.approx(0.00021)
    assert monthly["cap_usd"] == pytest.approx(0.012)  # the override is part of the cap
    assert monthly["override"]["extra_usd"] == pytest.approx(0.01)
    assert monthly["resets_at_local"].endswith("T00:00:00+01:00") or monthly[
        "resets_at_local"
    ].endswith("T00:00:00+02:00")
    assert {b["project"] for b in data} == {"search"}


def test_status_ok_below_thresholds(redis_url: str, lim: Limiter) -> None:
    done = cli("status", "quiet", url=redis_url)
    assert done.returncode == 0, done.stderr
    assert "daily" in done.stdout and "$1.00" in done.stdout
    data = json.loads(cli("status", "quiet", "--json", url=redis_url).stdout)
    assert data["budgets"][0]["spent_usd"] == 0.0


def test_status_errors(redis_url: str) -> None:
    assert cli("status", "bad name!", url=redis_url).returncode == 2
    done = cli("status", url="redis://127.0.0.1:1/0")
    assert done.returncode == 3
    assert "Redis unavailable" in done.stderr
    done = cli("status", url=redis_url)
    assert done.returncode == 0
    assert "no projects" in done.stdout
