"""Policy validation: every mistake is a PolicyError that names the offending key."""

from __future__ import annotations

import pytest

from prism_limiter import Policy, PolicyError

BASE = "[projects.p]\nallow_models=['*']\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BASE + "colour = 'red'\n", "colour"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\nperiod='fortnight'\n", "period"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\ntimezone='Mars/Olympus'\n", "timezone"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\nwarn_at=[1.5]\n", "warn_at"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\nwarn_at=[0]\n", "warn_at"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=-1\n", "usd"),
        (
            BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\n[[projects.p.budgets]]\nid='b'\nusd=2\n",
            "duplicate budget id 'b'",
        ),
        ("[projects.p]\nallow_models=['gpt-[4o']\n", "allow_models"),
        ("[projects.p]\ndeny_models=['gpt]']\n", "deny_models"),
        ("[projects.p]\nallow_models=['']\n", "allow_models"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\non_expiry='ignore'\n", "on_expiry"),
        (BASE + "on_unknown_price='maybe'\n", "on_unknown_price"),
        ("[projects.'bad name']\n", "project"),
        (BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\nsplit_by='bad key'\n", "split_by"),
        (BASE + "[[projects.p.budgets]]\nusd=1\n", "id"),
        (BASE + "[[projects.p.rate_limits]]\nid='r'\n", "rate_limits"),
        ("[projects.p\n", "malformed"),
    ],
)
def test_invalid_policies_name_the_key(text: str, needle: str) -> None:
    """Unknown keys, bad periods, zones, thresholds, amounts, ids and globs are refused."""
    with pytest.raises(PolicyError, match="policy") as exc:
        Policy.from_toml(text)
    assert needle in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_full_design_example_parses() -> None:
    """The policy from the design document is valid as written."""
    policy = Policy.from_toml(
        """
[projects.search]
allow_models = ["gpt-4o-mini", "claude-haiku-*"]
deny_models  = ["*opus*"]
default_max_output_tokens = 1024
on_unknown_price = "deny"

[[projects.search.budgets]]
id = "monthly"
usd = 500.0
period = "month"
timezone = "UTC"
warn_at = [0.8]
on_expiry = "charge"

[[projects.search.budgets]]
id = "per-customer"
usd = 5.0
period = "day"
split_by = "customer"
where = { feature = "chat" }

[[projects.search.rate_limits]]
id = "gpt4o"
models = ["gpt-4o*"]
rpm = 600
tpm = 200000
max_concurrent = 50
"""
    )
    search = policy.projects["search"]
    assert [b.id for b in search.budgets] == ["monthly", "per-customer"]
    assert search.budgets[1].where == {"feature": "chat"}
    assert policy.for_project("other") is None


def test_load_reads_a_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "policy.toml"
    path.write_text(BASE)
    assert Policy.load(path).projects["p"].allow_models == ("*",)
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(Path(str(tmp_path)) / "missing.toml")


def nested(depth: int) -> str:
    return "{b = " * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "text",
    [
        "a = " + nested(500),
        "[projects.p]\na = " + nested(500),
        "[projects.p]\nallow_models = " + "[" * 500 + "]" * 500,
        "[projects.p]\nwhere = " + nested(200),  # parses, then deep for msgspec
        "[defaults]\nprices = " + nested(300),
    ],
    ids=["top", "project", "array", "where", "defaults"],
)
def test_deeply_nested_tables_are_a_policy_error(text: str) -> None:
    """Nesting that exhausts the parser's stack is a malformed policy, not a RecursionError."""
    with pytest.raises(PolicyError, match="policy"):
        Policy.from_toml(text)


@pytest.mark.parametrize("text", [None, 42, ["[projects.p]"]])
def test_a_policy_document_is_text(text: object) -> None:
    with pytest.raises(PolicyError, match="str or bytes"):
        Policy.from_toml(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (BASE + "provider = 'a b'\n", "projects.p.provider"),
        (BASE + "provider = 'nope'\n", "projects.p.provider"),
        ("[defaults]\nprovider = 'a b'\n", "defaults.provider"),
    ],
)
def test_an_unknown_provider_is_a_policy_error(text: str, path: str) -> None:
    """The provider must be one genai-prices knows; the message names the key and valid ids."""
    with pytest.raises(PolicyError, match="unknown provider") as exc:
        Policy.from_toml(text)
    assert f"`{path}`" in str(exc.value)
    assert "'openai'" in str(exc.value) and "'anthropic'" in str(exc.value)


def test_a_misspelt_provider_gets_a_suggestion() -> None:
    with pytest.raises(PolicyError, match="did you mean 'openai'"):
        Policy.from_toml(BASE + "provider = 'opnai'\n")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "x-ai", "xai", "OpenAI", "bedrock"])
def test_known_providers_and_their_aliases_are_accepted(provider: str) -> None:
    """Whatever genai-prices itself resolves (ids, and aliases such as xai or bedrock)."""
    policy = Policy.from_toml(BASE + f"provider = '{provider}'\n")
    assert policy.projects["p"].provider == provider


BUDGET = BASE + "[[projects.p.budgets]]\nid='b'\nusd=1\n"


@pytest.mark.parametrize(
    ("text", "values"),
    [
        (BUDGET + "period='fortnight'\n", "'day', 'week', 'month', 'quarter', 'year', 'total'"),
        (BUDGET + "period=14\n", "'day', 'week', 'month', 'quarter', 'year', 'total'"),
        (BUDGET + "on_expiry='x'\n", "'charge', 'release'"),
        (BUDGET + "week_start='friday'\n", "'monday', 'sunday'"),
        (BASE + "on_unknown_price='maybe'\n", "'deny', 'allow'"),
        ("[defaults]\non_unknown_price='maybe'\n", "'deny', 'allow'"),
    ],
)
def test_a_bad_enum_value_lists_the_valid_ones(text: str, values: str) -> None:
    with pytest.raises(PolicyError) as exc:
        Policy.from_toml(text)
    assert f"one of {values}" in str(exc.value)
