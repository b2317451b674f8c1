"""A project covered by [defaults] registers only when a reserve of it is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import audit, keyspace

from prism_limiter import InvalidRequest, ModelNotAllowed, Policy

pytestmark = pytest.mark.usefixtures("rclient")

DEFAULTS = """
[projects.listed]
allow_models = ["*"]

[defaults]
allow_models = ["gpt-4o*"]
deny_models = ["gpt-4o-mini"]
on_unknown_price = "deny"
"""


def _registered(rclient: Any) -> set[bytes]:
    return set(rclient.smembers("prism:projects"))


def test_unknown_price_under_defaults_writes_nothing(limiter: Any, rclient: Any) -> None:
    """A refused call of an unlisted project leaves the keyspace exactly as it was."""
    limiter.apply_policy(Policy.from_toml(DEFAULTS.replace('"gpt-4o*"', '"*"')))
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match="no price"):
        limiter.reserve("fresh", "no-such-model-anywhere", est_tokens=10)
    assert keyspace(rclient) == before


def test_denied_model_audits_but_does_not_register(limiter: Any, rclient: Any) -> None:
    """A denial is audited in the project's stream; the project is not registered."""
    limiter.apply_policy(Policy.from_toml(DEFAULTS))
    with pytest.raises(ModelNotAllowed):
        limiter.reserve("fresh", "gpt-4o-mini", est_tokens=10)
    assert b"fresh" not in _registered(rclient)
    assert not rclient.exists("prism:{fresh}:policy")
    [entry] = audit(rclient, "fresh", "model.denied")
    assert entry["reason"] == "model-denied"


def test_accepted_reserve_registers_and_follows_changes(make_limiter: Any, rclient: Any) -> None:
    """The first accepted reserve stores the project's copy; later applies reach it."""
    a, b = make_limiter(), make_limiter()
    a.apply_policy(Policy.from_toml(DEFAULTS))
    b.reserve("fresh", "gpt-4o", est_tokens=10).release()
    assert b"fresh" in _registered(rclient)
    assert rclient.hget("prism:{fresh}:policy", "v") == b"1"
    a.apply_policy(Policy.from_toml(DEFAULTS.replace('deny_models = ["gpt-4o-mini"]', "")))
    b.reserve("fresh", "gpt-4o-mini", est_tokens=10).release()
    a.apply_policy(Policy.from_toml(DEFAULTS.replace('"gpt-4o*"', '"claude-*"')))
    with pytest.raises(ModelNotAllowed):
        b.reserve("fresh", "gpt-4o", est_tokens=10)


def test_unregistered_denial_is_not_cached(make_limiter: Any) -> None:
    """A worker that was denied under the old defaults is allowed as soon as they change."""
    a, b = make_limiter(), make_limiter()
    a.apply_policy(Policy.from_toml(DEFAULTS))
    with pytest.raises(ModelNotAllowed):
        b.reserve("fresh", "gpt-4o-mini", est_tokens=10)
    a.apply_policy(Policy.from_toml(DEFAULTS.replace('deny_models = ["gpt-4o-mini"]', "")))
    assert b.reserve("fresh", "gpt-4o-mini", est_tokens=10).release()


def test_registrations_are_bounded(make_limiter: Any, rclient: Any) -> None:
    """Past max_projects registered projects, [defaults] registers no more: nothing written."""
    lim = make_limiter(max_projects=2)
    lim.apply_policy(Policy.from_toml(DEFAULTS))
    lim.reserve("one", "gpt-4o", est_tokens=10).release()
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match="max_projects"):
        lim.reserve("two", "gpt-4o", est_tokens=10)
    assert keyspace(rclient) == before
    lim.reserve("one", "gpt-4o", est_tokens=10).release()  # registered ones go on
