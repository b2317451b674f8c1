"""The arithmetic behind ``report``: unit costs, cache savings, burn rate, run-out date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prism_limiter import UsageRow
from prism_limiter.cli._reportmath import Row, burn, cache_saved_usd, period_rate, sums_to
from prism_limiter.pricing._pricing import PRICES, from_mtok


def _usage(cost: float, requests: int, inp: int, out: int, read: int = 0) -> UsageRow:
    return UsageRow(
        cost_usd=cost,
        requests=requests,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=0,
        expired_holds=0,
    )


def test_unit_costs_and_cache_hit() -> None:
    row = Row("gpt-4o", _usage(0.5, 4, 9000, 1000, read=3000), None)
    assert row.tokens == 10_000
    assert row.per_request == 0.125
    assert row.per_1k_tokens == pytest.approx(0.05)
    assert row.cache_hit == pytest.approx(1 / 3)
    empty = Row("none", _usage(0.0, 0, 0, 0), None)
    assert empty.per_request is None and empty.per_1k_tokens is None and empty.cache_hit is None


def test_cache_saving_at_the_plain_input_price_minus_the_cache_read_price() -> None:
    negotiated = from_mtok("gpt-4o", {"input": 2.0, "output": 8.0, "cache_read": 0.5})
    assert cache_saved_usd(1_000_000, negotiated) == pytest.approx(1.5)
    listed = PRICES.get("gpt-4o-mini")
    assert listed is not None
    plain, read = listed.classes["input"].base, listed.classes["cache_read"].base
    assert cache_saved_usd(2_000_000, listed) == pytest.approx(2 * (plain - read) / 1e6)
    no_cache_price = from_mtok("x", {"input": 1.0, "output": 1.0})
    assert cache_saved_usd(1000, no_cache_price) == 0.0  # reads billed as plain input
    assert cache_saved_usd(1000, None) is None  # an unpriced model


def test_rows_add_up_exactly() -> None:
    total = _usage(0.3, 3, 300, 30)
    rows = [Row("a", _usage(0.1, 1, 100, 10), None), Row("b", _usage(0.2, 2, 200, 20), None)]
    assert sums_to(rows, total)
    assert not sums_to(rows[:1], total)


START = datetime(2025, 3, 1, tzinfo=UTC)
RESET = datetime(2025, 4, 1, tzinfo=UTC)  # a 31-day month


def _history(daily: list[float]) -> tuple[float, datetime]:
    """A synthetic period: ``daily[i]`` spent on day i; returns spent so far and 'now' (the
    end of the last day of the history)."""
    return sum(daily), START + timedelta(days=len(daily))


def test_burn_rate_forecast_and_run_out_from_a_synthetic_history() -> None:
    spent, now = _history([10.0] * 10)  # $10/day for 10 days
    b = burn(spent, 250.0, START, RESET, now)
    assert b is not None
    assert b.usd_per_day == pytest.approx(10.0)
    assert b.forecast_usd == pytest.approx(100 + 10 * 21)  # 21 days left at $10/day
    assert b.runs_out == START + timedelta(days=25)  # the remaining $150 lasts 15 more days


def test_uneven_history_is_averaged_over_the_elapsed_time() -> None:
    spent, now = _history([0, 0, 0, 0, 40])  # a quiet start then a spike: $8/day on average
    b = burn(spent, 1000.0, START, RESET, now)
    assert b is not None
    assert b.usd_per_day == pytest.approx(8.0)
    assert b.runs_out is None  # at $8/day the cap is not reached before the reset
    assert b.forecast_usd == pytest.approx(40 + 8 * 26)


def test_burn_edge_cases() -> None:
    now = START + timedelta(days=3)
    at_cap = burn(30.0, 30.0, START, RESET, now)
    assert at_cap is not None and at_cap.runs_out == now
    idle = burn(0.0, 30.0, START, RESET, now)
    assert idle is not None and idle.usd_per_day == 0 and idle.runs_out is None
    assert idle.forecast_usd == 0
    assert burn(5.0, 30.0, None, None, now) is None  # a "total" budget has no period start
    assert burn(5.0, 30.0, now, RESET, now) is None  # the period just started
    endless = burn(10.0, 30.0, START, None, now)
    assert endless is not None and endless.forecast_usd is None
    assert endless.runs_out == now + timedelta(days=6)


def test_period_rate_counts_only_elapsed_time() -> None:
    end = START + timedelta(days=10)
    assert period_rate(50.0, START, end, now=START + timedelta(days=5)) == pytest.approx(10.0)
    assert period_rate(50.0, START, end, now=end + timedelta(days=5)) == pytest.approx(5.0)
    assert period_rate(50.0, START, end, now=START) is None
