"""Frozen records returned to callers: decisions, settlements and budget status.

Every record encodes with ``msgspec.json.encode(record)`` (every field, ``None`` as ``null``)
and decodes back with ``msgspec.json.decode(data, type=...)``; ``record.to_dict()`` gives plain
JSON-ready data without the fields that are ``None``, which ``msgspec.convert(d, type=...)``
turns back into the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

# The tag value under which ``UsageReport.by_tag`` reports requests without the tag key. No
# real tag value is empty (they are 1-256 characters), so it cannot collide with one.
UNTAGGED = ""


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (dicts, lists, str, numbers, bool): fields that are ``None``
        are left out, datetimes are ISO-8601 strings (UTC, ``Z``), tuples are lists."""
        out: dict[str, Any] = _without_none(msgspec.to_builtins(self))
        return out


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


class BudgetState(_Record, frozen=True, kw_only=True):
    """One budget instance as a decision or a status report sees it (amounts in USD).

    ``cap_usd`` includes ``override_usd``, the extra of an override in force. ``mode`` is
    ``"shadow"`` for a budget that only audits what it would block (``budget.would_block``).
    """

    budget: str
    split_value: str | None = None
    cap_usd: float
    spent_usd: float
    held_usd: float
    remaining_usd: float
    period_start: datetime | None = None
    resets_at: datetime | None = None
    override_usd: float = 0.0
    mode: Literal["enforce", "shadow"] = "enforce"


class Override(_Record, frozen=True, kw_only=True):
    """An approved, expiring raise of one budget instance's cap, asked for by one person and
    approved by another.

    ``state`` is ``active`` until it ends, once: ``expired`` (its time came) or ``revoked``
    (revoked, or replaced by a new grant: ``end_reason`` ``"replaced"``). ``uses`` counts the
    reserves that fitted only thanks to it.
    """

    id: str
    project: str
    budget: str
    split_value: str | None = None
    extra_usd: float
    granted_at: datetime
    expires_at: datetime
    requested_by: str
    approved_by: str
    reason: str
    state: Literal["active", "expired", "revoked"] = "active"
    uses: int = 0
    ended_at: datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None


class BudgetWarning(_Record, frozen=True, kw_only=True):
    """A budget at or past one of its ``warn_at`` thresholds (counting live holds)."""

    budget: str
    split_value: str | None = None
    threshold: float
    used_fraction: float


class Decision(_Record, frozen=True, kw_only=True):
    """What ``reserve`` decided, and why.

    ``reason`` is ``None`` when allowed; otherwise one of ``budget``, ``rate``,
    ``rate-too-large`` (a request no bucket can ever hold: do not retry), ``model-denied``,
    ``model-not-allowed``, ``no-policy``. For a budget denial, ``budget``, ``cap_usd``,
    ``spent_usd``, ``held_usd``, ``over_by_usd`` and ``resets_at`` describe it; for a rate
    denial, ``limit``, ``limit_kind`` (``rpm``, ``tpm``, ``tpm-too-large``, ``concurrency``) and
    ``retry_after_s`` (None when no time can be promised). ``would_block`` and
    ``would_limit`` name the shadow budgets and rate limits that would have denied an allowed
    request. ``to_dict()`` includes ``remaining_usd`` too.
    """

    allowed: bool
    project: str
    model: str
    reservation_id: str
    reason: str | None = None
    message: str = "allowed"
    hold_usd: float = 0.0
    budget: str | None = None
    limit: str | None = None
    limit_kind: str | None = None
    split_value: str | None = None
    cap_usd: float | None = None
    spent_usd: float | None = None
    held_usd: float | None = None
    over_by_usd: float | None = None
    resets_at: datetime | None = None
    retry_after_s: float | None = None
    expires_at: datetime | None = None
    budgets: tuple[BudgetState, ...] = ()
    warnings: tuple[BudgetWarning, ...] = ()
    would_block: tuple[str, ...] = ()
    would_limit: tuple[str, ...] = ()
    replayed: bool = False
    degraded: bool = False

    @property
    def remaining_usd(self) -> float | None:
        """The smallest room left among the request's budgets after this hold."""
        if not self.budgets:
            return None
        return min(b.remaining_usd for b in self.budgets)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, as for every record, with ``remaining_usd`` when known."""
        out = super().to_dict()
        if self.remaining_usd is not None:
            out["remaining_usd"] = self.remaining_usd
        return out


class Settlement(_Record, frozen=True, kw_only=True):
    """The outcome of a settle. ``first`` is False when this id was already settled: nothing
    changed and the first settle's cost is reported. ``late`` marks a settle booked after the
    hold was released or expired (a correction)."""

    reservation_id: str
    cost_usd: float
    hold_usd: float
    refunded_usd: float
    over_estimate: bool
    first: bool
    late: bool
    unknown: bool = False
    degraded: bool = False  # Redis could not take it (open mode): logged, not booked


class UsageRow(_Record, frozen=True, kw_only=True):
    """Attribution for one row (the total, a model, or one tag value) over a day range."""

    cost_usd: float
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    expired_holds: int


class UsageReport(_Record, frozen=True, kw_only=True):
    """Spend per model and per tag value; each breakdown sums to ``total`` exactly.

    ``by_tag[key]`` maps each value of tag ``key`` to its row, and reports the requests that
    did not carry the key under the empty string ``""`` (``UNTAGGED``): no real tag value is
    empty, and a string key keeps the report encodable as JSON as it is, e.g.
    ``{"feature": {"chat": {...}, "": {...}}}``.
    """

    project: str
    days: tuple[str, ...]
    total: UsageRow
    by_model: dict[str, UsageRow]
    by_tag: dict[str, dict[str, UsageRow]]
