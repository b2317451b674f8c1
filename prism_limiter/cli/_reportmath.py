"""The arithmetic of ``report`` (pure): unit costs, cache savings, burn rate and run-out date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from prism_limiter.engine._money import NANO_PER_USD
from prism_limiter.engine._records import BudgetState, UsageRow
from prism_limiter.pricing._pricing import ModelPrice

PICO_PER_USD = 10**12
DAY_S = 86400.0
UNTAGGED_LABEL = "(untagged)"


@dataclass(frozen=True, slots=True)
class Row:
    """One report row: a model, a tag value or a day, with the dollars its cache saved
    (``None`` where that cannot be priced, e.g. a tag value's requests over several models)."""

    key: str
    usage: UsageRow
    saved_usd: float | None

    @property
    def tokens(self) -> int:
        """Input (cache reads and writes included) plus output tokens."""
        return self.usage.input_tokens + self.usage.output_tokens

    @property
    def per_request(self) -> float | None:
        u = self.usage
        return u.cost_usd / u.requests if u.requests else None

    @property
    def per_1k_tokens(self) -> float | None:
        return self.usage.cost_usd / self.tokens * 1000 if self.tokens else None

    @property
    def cache_hit(self) -> float | None:
        """Cache-read tokens over input tokens (the input total includes them)."""
        u = self.usage
        return u.cache_read_tokens / u.input_tokens if u.input_tokens else None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"key": self.key, **self.usage.to_dict()}
        out.update(
            tokens=self.tokens,
            cost_per_request_usd=self.per_request,
            cost_per_1k_tokens_usd=self.per_1k_tokens,
            cache_hit_ratio=self.cache_hit,
            cache_saved_usd=self.saved_usd,
        )
        return out


def cache_saved_usd(cache_read_tokens: int, price: ModelPrice | None) -> float | None:
    """What the cache-read tokens would have cost at the plain input rate, minus what was paid
    for them at the cache-read rate. Base prices (no long-context tier: the counters are daily
    sums, not requests). A model without a cache-read price is billed plain input for those
    tokens, so it saved nothing; an unpriced model gives ``None``."""
    if price is None or "input" not in price.classes:
        return None
    read = price.classes.get("cache_read")
    if read is None:
        return 0.0
    return cache_read_tokens * (price.classes["input"].base - read.base) / PICO_PER_USD


def sums_to(rows: list[Row], total: UsageRow) -> bool:
    """Whether the rows add up to the total exactly (in nano-dollars and every count)."""

    def nano(x: float) -> int:
        return round(x * NANO_PER_USD)

    fields = ("requests", "input_tokens", "output_tokens", "cache_read_tokens")
    return sum(nano(r.usage.cost_usd) for r in rows) == nano(total.cost_usd) and all(
        sum(getattr(r.usage, f) for r in rows) == getattr(total, f) for f in fields
    )


@dataclass(frozen=True, slots=True)
class Burn:
    """Spend per day so far in a period, and where that rate leads.

    ``forecast_usd``: spend at the period's end at this rate (None for a period without end).
    ``runs_out``: when spend reaches the cap at this rate — ``now`` when it already has, None
    when it does not before the period resets (or nothing is being spent).
    """

    usd_per_day: float
    forecast_usd: float | None
    runs_out: datetime | None


def burn(
    spent_usd: float,
    cap_usd: float,
    period_start: datetime | None,
    resets_at: datetime | None,
    now: datetime,
) -> Burn | None:
    """The simple estimator: rate = spent / elapsed since the period started; forecast =
    spent + rate x time left until the reset; run-out = now + (cap - spent) / rate, if that
    comes before the reset. None when the period has no start (``total``) or just began."""
    if period_start is None or now <= period_start:
        return None
    elapsed_days = (now - period_start).total_seconds() / DAY_S
    rate = spent_usd / elapsed_days
    left_days = (resets_at - now).total_seconds() / DAY_S if resets_at else None
    forecast = spent_usd + rate * max(0.0, left_days) if left_days is not None else None
    if spent_usd >= cap_usd:
        runs_out: datetime | None = now
    elif rate <= 0:
        runs_out = None
    else:
        runs_out = now + timedelta(days=(cap_usd - spent_usd) / rate)
        if resets_at is not None and runs_out >= resets_at:
            runs_out = None
    return Burn(usd_per_day=rate, forecast_usd=forecast, runs_out=runs_out)


@dataclass(frozen=True, slots=True)
class BudgetBurn:
    state: BudgetState
    burn: Burn | None
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Report:
    project: str
    by: str
    first: date
    last: date
    rows: list[Row]
    total: Row
    adds_up: bool
    usd_per_day: float | None
    budgets: list[BudgetBurn]
    now: datetime


def period_rate(cost_usd: float, start: datetime, end: datetime, now: datetime) -> float | None:
    """Spend per day over a report's range ``start``..``end``, counting only the time that has
    passed (a range ending today is not diluted by the hours still to come)."""
    elapsed = (min(end, now) - start).total_seconds() / DAY_S
    return cost_usd / elapsed if elapsed > 0 else None
