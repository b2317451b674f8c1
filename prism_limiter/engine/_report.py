"""Attribution reports: usage-day hashes summed into rows that add up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from prism_limiter.engine._keys import LS, unescape
from prism_limiter.engine._money import nano_to_usd
from prism_limiter.engine._records import UNTAGGED, UsageReport, UsageRow
from prism_limiter.errors import InvalidRequest

# A row of a usage-day hash: "usd:requests:input:output:cache read:cache write:expired".
METRICS = ("usd", "req", "in", "out", "cr", "cw", "exp")


# A usage-day hash (lib/state.lua book_usage) has one field per attribution shape: its rows
# joined by LS; "~" marks the hash's TTL. Rows stored one per field (no LS) are read as well.
TTL_MARK = "~"


def add_usage_field(sums: dict[str, dict[str, int]], field: str, packed: str) -> None:
    """Add one stored field of a usage-day hash to each row it names (damaged numbers, which the
    scripts would restart from 0, count 0)."""
    if field == TTL_MARK:
        return
    parts = packed.split(":")
    if len(parts) != len(METRICS):
        return
    try:
        values = [int(p) for p in parts]
    except ValueError:
        return
    for dim in field.split(LS):
        row = sums.setdefault(dim, {})
        for metric, value in zip(METRICS, values, strict=True):
            row[metric] = row.get(metric, 0) + value


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


MAX_REPORT_DAYS = 400


def utc_day(kind: str, value: object) -> date:
    """The UTC day of a ``date`` or ``datetime``; a naive datetime is read as UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return value.date()
        try:
            return value.astimezone(UTC).date()
        except OverflowError:
            raise InvalidRequest(f"{kind} is out of range in UTC: {value!r}") from None
    if isinstance(value, date):
        return value
    raise InvalidRequest(
        f"{kind} must be a datetime.date or datetime.datetime, got {type(value).__name__} {value!r}"
    )


def usage_days(start: date, end: date) -> list[str]:
    """UTC days from ``start`` to ``end`` inclusive, as the usage keys name them.

    Raises ``InvalidRequest`` when ``start`` is after ``end`` or the span is longer than
    ``MAX_REPORT_DAYS``; the span is checked before any day is listed."""
    span = (end - start).days + 1
    if span < 1:
        raise InvalidRequest(f"start ({start}) is after end ({end})")
    if span > MAX_REPORT_DAYS:
        raise InvalidRequest(
            f"a usage report spans at most {MAX_REPORT_DAYS} days, got {span:,} ({start} to {end})"
        )
    # isoformat, not strftime: "%Y" is not zero-padded before year 1000 on every platform.
    return [(start + timedelta(days=n)).isoformat().replace("-", "") for n in range(span)]
