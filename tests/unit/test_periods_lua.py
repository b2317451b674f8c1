"""lib/period.lua agrees with Python's zoneinfo on every period boundary (run in Lua 5.1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lupa import lua51

from prism_limiter.engine import _scripts
from prism_limiter.policy import _tz

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Africa/Cairo",  # DST starts at local midnight: the day begins at 01:00
    "America/Havana",
]
KINDS = ["day", "week", "month", "quarter", "year"]
START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
END = int(datetime(2035, 1, 1, tzinfo=UTC).timestamp())


def _lua_periods() -> Any:
    runtime = lua51.LuaRuntime()
    tables = {f"tz:{z}": _tz.transitions(z, 2025) for z in ZONES if z != "UTC"}
    runtime.globals().K_POLICY = "policy"
    source = (_scripts.lua_dir() / "lib" / "period.lua").read_text()
    return runtime.execute(
        "local tables = ...\n"
        "redis = {call = function(cmd, key, field) return tables[field] end}\n"
        + source
        + "\nreturn function(spec, now) local s, e = period_bounds(spec, now); return {s, e} end",
        runtime.table_from(tables),
    )


PERIOD = _lua_periods()


@settings(max_examples=600, deadline=None)
@given(
    now=st.integers(min_value=START, max_value=END),
    zone=st.sampled_from(ZONES),
    kind=st.sampled_from(KINDS),
    week_start=st.sampled_from(["monday", "sunday"]),
)
def test_lua_matches_zoneinfo(now: int, zone: str, kind: str, week_start: str) -> None:
    """For any instant, zone and period kind, Lua finds the same local-midnight boundaries."""
    spec = f"{kind}:{'1' if week_start == 'monday' else '0'}:{zone}"
    result = PERIOD(spec, now)
    expected = _tz.period_bounds(kind, zone, week_start, datetime.fromtimestamp(now, UTC))
    assert (int(result[1]), int(result[2])) == expected
    assert expected[0] <= now < expected[1]


@pytest.mark.parametrize("zone", ZONES)
def test_boundaries_around_every_transition(zone: str) -> None:
    """An instant either side of each DST change lands in the right day."""
    table = _tz.transitions(zone, 2025)
    for point in table.split(",")[1:]:
        t = int(point.split(":")[0])
        for now in (t - 1, t, t + 1, t + 3600, t - 3600):
            expected = _tz.period_bounds("day", zone, "monday", datetime.fromtimestamp(now, UTC))
            got = PERIOD(f"day:1:{zone}", now)
            assert (int(got[1]), int(got[2])) == expected, (zone, now)


def test_total_never_ends() -> None:
    got = PERIOD("total:1:UTC", START)
    assert (got[1], got[2]) == (0, 0)
