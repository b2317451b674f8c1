"""``projects()``: the stored document's projects plus those registered under [defaults]."""

from __future__ import annotations

from typing import Any

import pytest

from prism_limiter import Policy

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["*"]

[projects.billing]
allow_models = ["*"]

[defaults]
allow_models = ["gpt-4o-mini"]
"""


def test_no_policy_no_projects(limiter: Any) -> None:
    assert limiter.projects() == []


def test_listed_and_registered_projects(limiter: Any) -> None:
    limiter.apply_policy(Policy.from_toml(DOC))
    assert limiter.projects() == ["billing", "search"]
    # A project only [defaults] covers joins once one of its reserves is accepted ...
    limiter.reserve("adhoc", "gpt-4o-mini", est_tokens=10).release()
    # ... a denied one does not register.
    assert not limiter.try_reserve("denied", "gpt-4o", est_tokens=10).allowed
    assert limiter.projects() == ["adhoc", "billing", "search"]


def test_a_removed_project_that_was_registered_stays_known(limiter: Any) -> None:
    """remove_policy takes a project out of the document; its stored copy (and its state)
    remain, so it is still listed, falling back to [defaults]."""
    limiter.apply_policy(Policy.from_toml(DOC))
    limiter.remove_policy("billing")
    assert limiter.projects() == ["billing", "search"]


def test_namespaces_are_separate(make_limiter: Any) -> None:
    make_limiter(namespace="a").apply_policy(Policy.from_toml(DOC))
    assert make_limiter(namespace="b").projects() == []
