"""``policy diff``: what an apply would change, per project (pure)."""

from __future__ import annotations

from prism_limiter import Policy
from prism_limiter.cli._diff import Change, diff

BASE = """
[projects.search]
allow_models = ["gpt-4o-mini", "claude-haiku-*"]
deny_models = ["*opus*"]

[[projects.search.budgets]]
id = "monthly"
usd = 500.0

[[projects.search.budgets]]
id = "daily"
usd = 20.0
period = "day"

[[projects.search.rate_limits]]
id = "gpt4o"
rpm = 600

[projects.billing]
allow_models = ["*"]

[defaults]
allow_models = ["gpt-4o-mini"]
"""


def test_nothing_changes() -> None:
    p = Policy.from_toml(BASE)
    assert diff(p, p) == []
    assert diff(p, p, prune=True) == []


def test_item_by_item() -> None:
    new = Policy.from_toml(
        BASE.replace('"claude-haiku-*"', '"gpt-4.1-mini"')
        .replace("usd = 500.0", 'usd = 600.0\ntimezone = "Europe/Paris"')
        .replace(
            'id = "daily"\nusd = 20.0\nperiod = "day"', 'id = "weekly"\nusd = 90.0\nperiod = "week"'
        )
        .replace("rpm = 600", "rpm = 300\ntpm = 1000")
        .replace(
            'deny_models = ["*opus*"]',
            'deny_models = ["*opus*"]\nhold_ttl_s = 60\n'
            '[projects.search.prices."gpt-4o"]\ninput_mtok = 2.0\noutput_mtok = 8.0',
        )
    )
    got = diff(Policy.from_toml(BASE), new)
    assert got == [
        Change("search", "added", "allow_models", after="gpt-4.1-mini"),
        Change("search", "removed", "allow_models", before="claude-haiku-*"),
        Change("search", "changed", "hold_ttl_s", 600.0, 60.0),
        Change("search", "removed", "budget daily", before="$20 per day (UTC)"),
        Change("search", "changed", "budget monthly", 500.0, 600.0, "usd"),
        Change("search", "changed", "budget monthly", "UTC", "Europe/Paris", "timezone"),
        Change("search", "added", "budget weekly", after="$90 per week (UTC)"),
        Change("search", "changed", "rate limit gpt4o", 600, 300, "rpm"),
        Change("search", "changed", "rate limit gpt4o", None, 1000, "tpm"),
        Change("search", "added", "price gpt-4o", after="input_mtok 2, output_mtok 8"),
    ]


def test_only_named_projects_and_defaults_without_prune() -> None:
    """An apply replaces the projects the file names (and [defaults] if it has them); the
    others are left alone, so they are no change."""
    only = Policy.from_toml('[projects.new]\nallow_models = ["*"]\n')
    assert diff(Policy.from_toml(BASE), only) == [
        Change("new", "added", "project"),
        Change("new", "added", "allow_models", after="*"),
    ]


def test_prune_removes_unlisted_projects_and_defaults() -> None:
    only = Policy.from_toml(BASE.split("[projects.billing]", maxsplit=1)[0])
    assert diff(Policy.from_toml(BASE), only, prune=True) == [
        Change("billing", "removed", "project", after="falls back to no policy"),
        Change("[defaults]", "removed", "defaults"),
    ]
    with_defaults = Policy.from_toml(BASE.replace('allow_models = ["*"]', 'allow_models = ["x"]'))
    assert diff(Policy.from_toml(BASE), with_defaults, prune=True) == [
        Change("billing", "added", "allow_models", after="x"),
        Change("billing", "removed", "allow_models", before="*"),
    ]


def test_new_defaults_are_listed() -> None:
    before = Policy.from_toml(BASE.split("[defaults]", maxsplit=1)[0])
    got = diff(before, Policy.from_toml('[defaults]\nallow_models = ["gpt-4o-mini"]\n'))
    assert got == [
        Change("[defaults]", "added", "defaults"),
        Change("[defaults]", "added", "allow_models", after="gpt-4o-mini"),
    ]
