"""budget.forecast: the burn rate so far predicts the cap before the period ends; once a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _helpers import audit

from prism_limiter import Policy


def _period_start(kind: str, now: datetime) -> tuple[datetime, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return day, day + timedelta(days=1)
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if kind == "month":
        start = day.replace(day=1)
        return start, (start + timedelta(days=32)).replace(day=1)
    start = day.replace(month=1, day=1)
    return start, start.replace(year=start.year + 1)


def _a_period_well_under_way() -> tuple[str, float]:
    """A period kind with between a fifth and four fifths of it gone, and how much."""
    now = datetime.now(UTC)
    for kind in ("day", "week", "month", "year"):
        start, end = _period_start(kind, now)
        gone = (now - start) / (end - start)
        if 0.2 <= gone <= 0.8:
            return kind, gone
    pytest.skip("every period is at its very start or end right now")


def test_forecast_fires_once_when_the_rate_reaches_the_cap(limiter: Any, rclient: Any) -> None:
    """Spend that, at its rate so far, would pass the cap before the period ends is audited once;
    spend whose rate stays under it is not."""
    kind, gone = _a_period_well_under_way()
    limiter.apply_policy(
        Policy.from_toml(
            f"""
[projects.p]
allow_models = ["*"]
[projects.p.prices."flat"]
input_mtok = 1000000.0
output_mtok = 0.0
[[projects.p.budgets]]
id = "hot"
usd = 10.0
period = "{kind}"
warn_at = [1.0]
split_by = "team"
"""
        )
    )
    # $1 per 1 token. "fast" spends (gone + 1) / 2 of its cap: at that rate it ends above the cap.
    fast = round(10 * (gone + 1) / 2)
    slow = max(1, int(10 * gone / 2))  # half the rate that would reach the cap: never fires
    for team, dollars in (("fast", fast), ("slow", slow)):
        for _ in range(dollars):
            r = limiter.reserve("p", "flat", est_tokens=1, max_output_tokens=0, tags={"team": team})
            r.settle(input_tokens=1, output_tokens=0)
    fired = audit(rclient, "p", "budget.forecast")
    assert [e["split"] for e in fired] == ["fast"]
    [entry] = fired
    assert float(entry["forecast_usd"]) >= 10.0 > float(entry["spent_usd"])
    assert int(entry["runs_out_at"]) <= int(entry["period_end"])
