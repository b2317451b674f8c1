"""Attribution reports: usage-day hashes summed into rows that add up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prism_limiter._keys import unescape
from prism_limiter._money import nano_to_usd
from prism_limiter._records import UNTAGGED, UsageReport, UsageRow


def _row(counters: dict[str, int]) -> UsageRow:
    g = counters.get
    return UsageRow(
        cost_usd=nano_to_usd(g("usd", 0)),
        requests=g("req", 0),
        input_tokens=g("in", 0),
        output_tokens=g("out", 0),
        cache_read_tokens=g("cr", 0),
        cache_write_tokens=g("cw", 0),
        expired_holds=g("exp", 0),
    )


def build_report(
    project: str, days: tuple[str, ...], sums: dict[str, dict[str, int]]
) -> UsageReport:
    """Rows per model and per tag value; each tag key gets an ``UNTAGGED`` row for requests
    without it, so that every breakdown sums to the total exactly."""
    total = sums.get("total", {})
    by_model: dict[str, UsageRow] = {}
    by_tag_raw: dict[str, dict[str, dict[str, int]]] = {}
    for dim, counters in sums.items():
        if dim.startswith("model="):
            by_model[unescape(dim[6:])] = _row(counters)
        elif dim.startswith("tag:"):
            key, _, value = dim[4:].partition("=")
            by_tag_raw.setdefault(key, {})[unescape(value)] = counters
    by_tag: dict[str, dict[str, UsageRow]] = {}
    for key, values in by_tag_raw.items():
        rest = dict(total)
        for counters in values.values():
            for metric, n in counters.items():
                rest[metric] = rest.get(metric, 0) - n
        rows = {v: _row(c) for v, c in sorted(values.items())}
        if any(rest.values()):
            rows[UNTAGGED] = _row(rest)
        by_tag[key] = rows
    return UsageReport(
        project=project, days=days, total=_row(total), by_model=by_model, by_tag=by_tag
    )


def usage_days(start: datetime, end: datetime) -> list[str]:
    """UTC days from ``start`` to ``end`` inclusive, as the usage keys name them."""
    days, day = [], start.astimezone(UTC).date()
    while day <= end.astimezone(UTC).date():
        days.append(day.strftime("%Y%m%d"))
        day += timedelta(days=1)
    return days
