"""Attribution: per-model and per-tag breakdowns sum exactly to the project total."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from prism_limiter import InvalidRequest, Policy

pytestmark = pytest.mark.usefixtures("rclient")


def nano(usd: float) -> int:
    return round(usd * 1e9)


def test_breakdowns_add_up(limiter: Any, rclient: Any) -> None:
    """Multi-tag requests are counted once per tag key, never twice in a total."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n"))
    rng = random.Random(7)
    models = ["gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"]
    expected_total = 0
    for i in range(60):
        tags = {"team": rng.choice(["growth", "core"])}
        if i % 3:
            tags["feature"] = rng.choice(["chat", "search", "org:42"])
        r = limiter.reserve("p", rng.choice(models), est_tokens=100, tags=tags)
        s = r.settle(input_tokens=rng.randint(1, 500), output_tokens=rng.randint(0, 200))
        expected_total += round(s.cost_usd * 1e9)
    report = limiter.usage("p")
    assert nano(report.total.cost_usd) == expected_total
    assert report.total.requests == 60
    assert sum(nano(r.cost_usd) for r in report.by_model.values()) == expected_total
    for key, rows in report.by_tag.items():
        assert sum(nano(r.cost_usd) for r in rows.values()) == expected_total, key
        assert sum(r.requests for r in rows.values()) == 60
        assert sum(r.input_tokens for r in rows.values()) == report.total.input_tokens
    assert "" in report.by_tag["feature"]  # requests without a feature tag
    assert "" not in report.by_tag["team"]
    assert "org:42" in report.by_tag["feature"]


def test_one_field_per_shape_and_rows_still_add_up(limiter: Any, rclient: Any) -> None:
    """Each (model, tags) shape is booked in one field of the day hash; a report spreads every
    shape over the rows it names, so each breakdown still sums to the total exactly."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n"))
    key = f"prism:{{p}}:usage:{datetime.now(UTC).strftime('%Y%m%d')}"
    rng = random.Random(3)
    expected: dict[str, int] = {}
    for i in range(40):
        tags = {"team": rng.choice(["growth", "core", "x" * 200])}
        r = limiter.reserve("p", "gpt-4o-mini", est_tokens=100, tags=tags)
        s = r.settle(input_tokens=rng.randint(1, 500), output_tokens=rng.randint(0, 200))
        for row in ("total", tags["team"]):
            expected[row] = expected.get(row, 0) + round(s.cost_usd * 1e9)
        report = limiter.usage("p")
        assert nano(report.total.cost_usd) == expected["total"], i
        assert report.total.requests == i + 1
        by_team = {team: nano(row.cost_usd) for team, row in report.by_tag["team"].items()}
        assert by_team == {k: v for k, v in expected.items() if k != "total"}, i
    shapes = {f for f in rclient.hkeys(key) if f != b"~"}
    assert len(shapes) == len(expected) - 1  # one per team value
    assert rclient.ttl(key) > 0


def test_usage_takes_dates_and_datetimes(limiter: Any) -> None:
    """A date, an aware or a naive datetime (read as UTC) name the same UTC day."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\nallow_models=['*']\n"))
    limiter.reserve("p", "gpt-4o-mini", est_tokens=10).settle(input_tokens=7, output_tokens=3)
    now = datetime.now(UTC)
    today = now.date()
    for start in (
        today,
        now,
        now.replace(tzinfo=None),
        now.astimezone(timezone(timedelta(hours=5))),
    ):
        report = limiter.usage("p", start)
        assert report.days == (today.strftime("%Y%m%d"),)
        assert report.total.input_tokens == 7
    week = limiter.usage("p", today - timedelta(days=6), today)
    assert len(week.days) == 7 and week.total.requests == 1
    assert limiter.usage("p", date(9999, 12, 31)).total.requests == 0
    with pytest.raises(InvalidRequest, match="after end"):
        limiter.usage("p", today, today - timedelta(days=1))
    with pytest.raises(InvalidRequest, match=r"datetime\.date"):
        limiter.usage("p", today.isoformat())
