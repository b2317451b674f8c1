"""Usage-report arguments: which UTC days a report reads, checked before any I/O."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from prism_limiter import InvalidRequest
from prism_limiter.engine._core import LimiterCore, Settings
from prism_limiter.engine._protocol import Command


def days_read(start: object, end: object = None) -> list[str]:
    """The usage-day keys the report would read, by driving the core without a server."""
    op = LimiterCore(Settings()).usage("p", start, end)  # type: ignore[arg-type]
    keys = []
    try:
        request = next(op)
        while True:
            assert isinstance(request, Command)
            keys.append(str(request.args[1]).rpartition(":")[2])
            request = op.send({})
    except StopIteration:
        pass
    return keys


@pytest.fixture
def far_east_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local zone 14 hours ahead of UTC, where local and UTC days differ by noon."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_dates_and_datetimes_name_utc_days() -> None:
    assert days_read(date(2026, 1, 1)) == ["20260101"]
    assert days_read(date(2026, 1, 30), date(2026, 2, 1)) == ["20260130", "20260131", "20260201"]
    late = datetime(2026, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert days_read(late) == ["20260102"]  # 04:30 UTC on the next day
    assert days_read(datetime(2026, 1, 1, tzinfo=UTC), date(2026, 1, 2)) == [
        "20260101",
        "20260102",
    ]
    assert days_read(date(9999, 12, 31)) == ["99991231"]
    assert days_read(date(1, 1, 1)) == ["00010101"]


@pytest.mark.usefixtures("far_east_local_time")
def test_a_naive_datetime_is_read_as_utc() -> None:
    """Not as the host's local time: noon on Jan 1 is Jan 1 in UTC, not Dec 31."""
    assert days_read(datetime(2026, 1, 1, 12, 0)) == ["20260101"]


def test_a_report_spans_at_most_400_days() -> None:
    assert len(days_read(date(2025, 1, 1), date(2026, 2, 4))) == 400
    with pytest.raises(InvalidRequest, match="400 days"):
        days_read(date(2025, 1, 1), date(2026, 2, 5))


def test_the_span_is_checked_before_the_days_are_listed() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match="400 days"):
        days_read(datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [
        ("2026-01-01", None, "start must be a datetime.date or datetime.datetime"),
        (20260101, None, "start must be"),
        (date(2026, 1, 1), "2026-01-02", "end must be"),
        (date(2026, 1, 2), date(2026, 1, 1), "after end"),
        (datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))), None, "out of range"),
        (datetime.min.replace(tzinfo=timezone(timedelta(hours=5))), None, "out of range"),
    ],
    ids=repr,
)
def test_bad_report_arguments_raise_invalid_request(
    start: object, end: object, needle: str
) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        days_read(start, end)
