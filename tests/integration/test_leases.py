"""Leases: an unsettled hold expires on the server clock, charged or released per policy."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit, held_nano, spent_nano

from prism_limiter import Policy

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "charging"
usd = 10.0
on_expiry = "charge"
[[projects.p.budgets]]
id = "releasing"
usd = 10.0
on_expiry = "release"
"""


def _wait_past(seconds: float) -> None:
    time.sleep(seconds + 0.05)  # the lease runs on the server clock; a margin, not a race


def test_expired_hold_is_charged_or_released_per_budget(limiter: Any, rclient: Any) -> None:
    """An overdue hold is charged where on_expiry=charge, released elsewhere, audited once."""
    limiter.apply_policy(Policy.from_toml(POLICY))
    r = limiter.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=100, ttl_s=0.1)
    hold = round(r.decision.hold_usd * 1e9)
    _wait_past(0.1)
    assert limiter.sweep("p") == 1
    assert limiter.sweep("p") == 0
    assert held_nano(rclient, "p", "charging") == 0 == held_nano(rclient, "p", "releasing")
    assert spent_nano(rclient, "p", "charging") == hold
    assert spent_nano(rclient, "p", "releasing") == 0
    [entry] = audit(rclient, "p", "hold.expired")
    assert entry["rid"] == r.id and entry["reason"] == "charged"
    assert limiter.usage("p").total.expired_holds == 1


def test_expiry_is_swept_lazily_by_any_script(limiter: Any, rclient: Any) -> None:
    """No daemon: the next reserve of the project expires overdue holds itself."""
    limiter.apply_policy(Policy.from_toml(POLICY))
    limiter.reserve("p", "gpt-4o", est_tokens=1000, ttl_s=0.1)
    _wait_past(0.1)
    limiter.reserve("p", "gpt-4o", est_tokens=1, max_output_tokens=0).release()
    assert len(audit(rclient, "p", "hold.expired")) == 1
    assert held_nano(rclient, "p", "charging") == 0


def test_late_settle_after_expiry_is_a_correction(limiter: Any, rclient: Any) -> None:
    """A settle after expiry books the actual cost exactly once: never lost, never double."""
    limiter.apply_policy(Policy.from_toml(POLICY))
    r = limiter.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=1000, ttl_s=0.1)
    _wait_past(0.1)
    limiter.sweep("p")
    s = r.settle(input_tokens=200, output_tokens=50)
    assert s.late and s.first
    cost = round(s.cost_usd * 1e9)
    assert spent_nano(rclient, "p", "charging") == cost
    assert spent_nano(rclient, "p", "releasing") == cost
    assert r.settle(input_tokens=200, output_tokens=50).first is False
    assert spent_nano(rclient, "p", "charging") == cost
    report = limiter.usage("p")
    assert round(report.total.cost_usd * 1e9) == cost and report.total.requests == 1
    assert [e["reason"] for e in audit(rclient, "p", "settle.late")] == ["after-expiry-charged"]


def test_release_mode_only(limiter: Any, rclient: Any) -> None:
    """With every budget on_expiry=release, an expired hold costs nothing and books no spend."""
    limiter.apply_policy(
        Policy.from_toml(
            "[projects.q]\nallow_models=['*']\n[[projects.q.budgets]]\nid='b'\nusd=1.0\n"
            "on_expiry='release'\n"
        )
    )
    r = limiter.reserve("q", "gpt-4o", est_tokens=1000, ttl_s=0.1)
    _wait_past(0.1)
    assert limiter.sweep("q") == 1
    assert spent_nano(rclient, "q", "b") == 0
    assert limiter.usage("q").total.cost_usd == 0
    s = r.settle(input_tokens=10, output_tokens=10)
    assert s.late and spent_nano(rclient, "q", "b") == round(s.cost_usd * 1e9)
    assert audit(rclient, "q", "hold.expired")[0]["reason"] == "released"
