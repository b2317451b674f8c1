"""Typed audit entries for consumers: one frozen msgspec struct per event (schema 1).

``limiter.read_audit(project)`` yields them; :func:`parse_entry` turns any entry (from
``XRANGE``, ``XREAD`` or an exported JSONL line) into one. Amounts are exact ``Decimal`` USD,
``tags`` a dict, times epoch milliseconds (``.ts`` as a datetime). An entry whose event this
version does not know, or that does not parse, becomes :class:`UnknownEvent` with its raw
fields, so a reader never stops on an entry written by a newer release. docs/AUDIT.md
describes every event and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from prism_limiter.audit._chain import AuditCheckpoint, AuditVerification

SCHEMA = 1

__all__ = [
    "SCHEMA",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditVerification",
    "BudgetBlocked",
    "BudgetWarn",
    "BudgetWouldBlock",
    "HoldDamaged",
    "HoldExpired",
    "ModelDenied",
    "OverrideExpired",
    "OverrideGranted",
    "OverrideRevoked",
    "OverrideUsed",
    "PolicyApplied",
    "PolicyRemoved",
    "PriceUnknown",
    "RateLimited",
    "RateWouldLimit",
    "SettleLate",
    "SettleOverEstimate",
    "SettleUnknown",
    "UnknownEvent",
    "parse_entry",
]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every entry has: its stream ``id``, ``event``, ``project``, ``ts_ms`` (when it was
    written, server clock), ``seq`` (gapless per stream), ``schema`` and ``chain``."""

    EVENT: ClassVar[str] = ""
    id: str
    event: str
    project: str
    ts_ms: int
    seq: int
    schema: int
    chain: str

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, UTC)


class _Counted(AuditEvent, frozen=True, kw_only=True):
    """A decision that may come in floods: ``count`` identical ones (same event, limit, model,
    tags and reason) within a second share one entry, which carries the last one's ``rid``
    and amounts, and the first and last decision time when ``count`` > 1."""

    count: int = 1
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None


class _CountedRequest(_Counted, frozen=True, kw_only=True):
    model: str
    tags: dict[str, str] = {}
    rid: str
    reason: str


class PolicyApplied(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "policy.applied"
    version: int
    actor: str
    reason: str


class PolicyRemoved(PolicyApplied, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "policy.removed"


class ModelDenied(_CountedRequest, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "model.denied"


class PriceUnknown(_CountedRequest, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "price.unknown"


class BudgetBlocked(_CountedRequest, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "budget.blocked"
    budget: str
    split: str | None = None
    amount_usd: Decimal
    spent_usd: Decimal
    held_usd: Decimal
    cap_usd: Decimal


class BudgetWouldBlock(BudgetBlocked, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "budget.would_block"


class RateLimited(_CountedRequest, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "rate.limited"
    limit: str
    split: str | None = None
    kind: str
    retry_after_ms: int


class RateWouldLimit(RateLimited, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "rate.would_limit"


class BudgetWarn(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "budget.warn"
    budget: str
    split: str | None = None
    threshold: float
    spent_usd: Decimal
    cap_usd: Decimal
    rid: str
    model: str


class BudgetForecast(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "budget.forecast"
    budget: str
    split: str | None = None
    spent_usd: Decimal
    cap_usd: Decimal
    forecast_usd: Decimal
    period_end: int  # epoch s
    runs_out_at: int  # epoch s, at the burn rate so far
    rid: str
    model: str


class HoldExpired(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "hold.expired"
    rid: str
    model: str
    tags: dict[str, str] = {}
    budget: str  # the budget instances it held on, comma-separated
    amount_usd: Decimal
    reason: str


class HoldDamaged(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "hold.damaged"
    rid: str
    reason: str


class SettleOverEstimate(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "settle.over_estimate"
    rid: str
    model: str
    tags: dict[str, str] = {}
    budget: str
    amount_usd: Decimal
    hold_usd: Decimal
    reason: str


class SettleLate(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "settle.late"
    rid: str
    model: str
    tags: dict[str, str] = {}
    budget: str
    amount_usd: Decimal
    correction_usd: Decimal
    reason: str


class SettleUnknown(AuditEvent, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "settle.unknown"
    rid: str
    model: str
    tags: dict[str, str] = {}
    budget: str
    amount_usd: Decimal
    reason: str


class _Override(AuditEvent, frozen=True, kw_only=True):
    override: str
    budget: str
    split: str | None = None
    amount_usd: Decimal
    requested_by: str
    approved_by: str
    reason: str


class OverrideGranted(_Override, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "override.granted"
    until_ms: int


class OverrideUsed(_Override, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "override.used"
    model: str
    tags: dict[str, str] = {}
    rid: str
    spent_usd: Decimal
    cap_usd: Decimal
    period_start: int


class OverrideExpired(_Override, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "override.expired"
    until_ms: int
    grant_reason: str
    uses: int
    actor: str | None = None


class OverrideRevoked(OverrideExpired, frozen=True, kw_only=True):
    EVENT: ClassVar[str] = "override.revoked"


class UnknownEvent(AuditEvent, frozen=True, kw_only=True):
    """An entry of an event this version does not know, or one that did not parse (``error``);
    ``fields`` holds every field as written."""

    fields: dict[str, str] = {}
    error: str | None = None


EVENTS: dict[str, type[AuditEvent]] = {
    cls.EVENT: cls
    for cls in (
        PolicyApplied,
        PolicyRemoved,
        ModelDenied,
        PriceUnknown,
        BudgetBlocked,
        BudgetWouldBlock,
        RateLimited,
        RateWouldLimit,
        BudgetWarn,
        BudgetForecast,
        HoldExpired,
        HoldDamaged,
        SettleOverEstimate,
        SettleLate,
        SettleUnknown,
        OverrideGranted,
        OverrideUsed,
        OverrideExpired,
        OverrideRevoked,
    )
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> AuditEvent:
    """One audit entry (its stream id and field/value pairs, as str or bytes) as its struct."""
    raw = {_text(k): _text(v) for k, v in fields.items()}
    data: dict[str, Any] = dict(raw)
    data["id"] = _text(entry_id)
    if data.get("split") == "":
        del data["split"]
    cls = EVENTS.get(raw.get("event", ""))
    try:
        if "tags" in data:
            data["tags"] = json.loads(data["tags"])
        if cls is not None:
            return msgspec.convert(data, cls, strict=False)
        error = None
    except (msgspec.ValidationError, ValueError) as exc:
        error = str(exc)
    base = {k: data.get(k, raw.get(k)) for k in ("event", "project", "chain")}
    numbers = {}
    for k in ("ts_ms", "seq", "schema"):
        value = raw.get(k, "")
        numbers[k] = int(value) if value.isdigit() else 0
    return UnknownEvent(
        id=_text(entry_id),
        event=base["event"] or "",
        project=base["project"] or "",
        chain=base["chain"] or "",
        fields=raw,
        error=error,
        **numbers,
    )
