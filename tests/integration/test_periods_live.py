"""Budget periods are calendar periods in the budget's own timezone, on the server clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from prism_limiter import Policy
from prism_limiter.policy import _tz

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "kiritimati"
usd = 5
period = "day"
timezone = "Pacific/Kiritimati"
[[projects.p.budgets]]
id = "la"
usd = 5
period = "day"
timezone = "America/Los_Angeles"
[[projects.p.budgets]]
id = "kolkata-week"
usd = 5
period = "week"
week_start = "sunday"
timezone = "Asia/Kolkata"
[[projects.p.budgets]]
id = "paris-quarter"
usd = 5
period = "quarter"
timezone = "Europe/Paris"
[[projects.p.budgets]]
id = "forever"
usd = 5
period = "total"
"""


def test_boundaries_are_local_midnights(limiter: Any, rclient: Any) -> None:
    """Each budget resets at local midnight of its own zone, as zoneinfo computes it."""
    limiter.apply_policy(Policy.from_toml(POLICY))
    server_now = datetime.fromtimestamp(int(rclient.time()[0]), UTC)
    r = limiter.reserve("p", "gpt-4o", est_tokens=10)
    by_id = {b.budget: b for b in r.decision.budgets}
    specs = {
        "kiritimati": ("day", "Pacific/Kiritimati", "monday"),
        "la": ("day", "America/Los_Angeles", "monday"),
        "kolkata-week": ("week", "Asia/Kolkata", "sunday"),
        "paris-quarter": ("quarter", "Europe/Paris", "monday"),
    }
    for budget, (kind, zone, week) in specs.items():
        start, end = _tz.period_bounds(kind, zone, week, server_now)
        state = by_id[budget]
        assert state.period_start is not None and state.resets_at is not None
        assert (int(state.period_start.timestamp()), int(state.resets_at.timestamp())) == (
            start,
            end,
        )
        local = state.resets_at.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (0, 0)
    # Kiritimati (UTC+14) and Los Angeles (UTC-8/-7) are on different calendar days.
    assert by_id["kiritimati"].resets_at != by_id["la"].resets_at
    assert by_id["kolkata-week"].resets_at.astimezone(ZoneInfo("Asia/Kolkata")).weekday() == 6
    assert by_id["forever"].resets_at is None and by_id["forever"].period_start is None
    r.release()
