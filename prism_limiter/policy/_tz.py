"""UTC offset transitions of an IANA zone, computed from the tz database for the Lua scripts.

Lua has no tz database, so the client sends each zone once (with the policy) as
``"<utc s>:<offset s>,..."`` from a year back to ten years ahead; the scripts then find local
midnights on the server clock. Beyond that range the last offset is used (re-applying the
policy extends it).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_HOUR = 3600


def _offset(zone: ZoneInfo, ts: int) -> int:
    delta = datetime.fromtimestamp(ts, zone).utcoffset()
    return int(delta.total_seconds()) if delta else 0


@functools.cache
def transitions(zone_name: str, start_year: int, years: int = 11) -> str:
    """Offsets of ``zone_name`` from 1 January ``start_year`` for ``years`` years."""
    zone = ZoneInfo(zone_name)
    start = int(datetime(start_year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(start_year + years, 1, 1, tzinfo=UTC).timestamp())
    points = [(start, _offset(zone, start))]
    ts = start
    step = 6 * _HOUR
    while ts < end:
        nxt = ts + step
        if _offset(zone, nxt) != points[-1][1]:
            lo, hi = ts, nxt  # the change lies in (lo, hi]: bisect to the second
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == points[-1][1]:
                    lo = mid
                else:
                    hi = mid
            points.append((hi, _offset(zone, hi)))
        ts = nxt
    return ",".join(f"{t}:{o}" for t, o in points)


def for_zones(zones: set[str], now: datetime | None = None) -> list[tuple[str, str]]:
    """(zone, transitions) for every zone but UTC, from last year on."""
    year = (now or datetime.now(UTC)).year - 1
    return [(z, transitions(z, year)) for z in sorted(zones) if z != "UTC"]


def period_bounds(kind: str, zone_name: str, week_start: str, now: datetime) -> tuple[int, int]:
    """Reference implementation of lib/period.lua in Python (used by tests and reports)."""
    if kind == "total":
        return 0, 0
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    day = local.date()
    if kind == "day":
        start, end = day, day + timedelta(days=1)
    elif kind == "week":
        first = 0 if week_start == "monday" else 6  # Python weekday(): Monday == 0
        start = day - timedelta(days=(day.weekday() - first) % 7)
        end = start + timedelta(days=7)
    else:
        months = {"month": 1, "quarter": 3, "year": 12}[kind]
        first_month = 1 if kind == "year" else day.month - (day.month - 1) % months
        start = day.replace(month=first_month, day=1)
        total = start.year * 12 + start.month - 1 + months
        end = start.replace(year=total // 12, month=total % 12 + 1)

    def midnight(d: date) -> int:
        return int(datetime.combine(d, datetime.min.time(), zone).timestamp())

    return midnight(start), midnight(end)
