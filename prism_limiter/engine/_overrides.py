"""Overrides: expiring raises of one budget instance's cap, asked for by one person and
approved by another (the pure core of ``grant_override`` / ``revoke_override`` /
``list_overrides``; the script is ``lua/override.lua``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from prism_limiter.engine import _validate
from prism_limiter.engine._keys import FS, LS
from prism_limiter.engine._money import nano_to_usd, usd_to_nano
from prism_limiter.engine._protocol import Op, as_int, text
from prism_limiter.engine._records import Override
from prism_limiter.errors import InvalidRequest

if TYPE_CHECKING:
    from prism_limiter.engine._core import LimiterCore

MAX_OVERRIDE_TTL_S = 366 * 86400  # an override lasts at most a year
_STATES: dict[str, Literal["active", "expired", "revoked"]] = {
    "A": "active",
    "X": "expired",
    "R": "revoked",
}


def _person(value: str) -> str:
    return " ".join(value.casefold().split())


def _target(
    core: LimiterCore, project: str, budget: str, split_value: str | None, texts: dict[str, str]
) -> Op[tuple[str, str]]:
    """The instance id and label of an override's budget, checked against the policy.

    Everything that can be checked without the policy is checked first."""
    _validate.name("project", project)
    _validate.name("budget", budget)
    if split_value is not None:
        _validate.tag_value("split_value", split_value)
    for kind, value in texts.items():
        _validate.text(kind, value)
    yield from core._preflight(project)
    rules = yield from core.rules(project)
    return rules.budget_instance(budget, split_value)


def grant(
    core: LimiterCore,
    project: str,
    budget: str,
    *,
    split_value: str | None,
    usd: float,
    ttl_s: float,
    requested_by: str,
    approved_by: str,
    reason: str,
) -> Op[Override]:
    """Raise one budget instance's cap by ``usd`` until ``ttl_s`` from now (server clock)."""
    extra = usd_to_nano("override usd", usd)
    if extra <= 0:
        raise InvalidRequest(f"override usd must be more than 0, got {usd!r}")
    seconds = _validate.seconds("ttl_s", ttl_s, maximum=MAX_OVERRIDE_TTL_S)
    texts = {"requested_by": requested_by, "approved_by": approved_by, "reason": reason}
    for kind, value in texts.items():
        _validate.text(kind, value)
    if _person(requested_by) == _person(approved_by):
        raise InvalidRequest(
            f"an override needs two people: requested_by and approved_by are both {requested_by!r}"
        )
    iid, label = yield from _target(core, project, budget, split_value, texts)
    oid = uuid.uuid4().hex[:16]
    args: list[str | int] = ["grant", iid, label, extra, max(1, int(seconds * 1000))]
    args += [requested_by, approved_by, reason, oid]
    reply = yield core._script("override", project, args)
    core._check_reply(reply)
    return Override(
        id=oid,
        project=project,
        budget=budget,
        split_value=split_value,
        extra_usd=nano_to_usd(extra),
        granted_at=_when(reply[2]),
        expires_at=_when(reply[1]),
        requested_by=requested_by,
        approved_by=approved_by,
        reason=reason,
    )


def revoke(
    core: LimiterCore,
    project: str,
    budget: str,
    *,
    split_value: str | None,
    actor: str,
    reason: str,
) -> Op[bool]:
    """End the instance's override now; True if one was in force."""
    texts = {"actor": actor, "reason": reason}
    iid, _ = yield from _target(core, project, budget, split_value, texts)
    reply = yield core._script("override", project, ["revoke", iid, actor, reason])
    core._check_reply(reply)
    return bool(as_int(reply[1]))


def listed(core: LimiterCore, project: str) -> Op[list[Override]]:
    """Every override of ``project``: in force, and ended within the audit retention."""
    _validate.name("project", project)
    yield from core._preflight(project)
    reply = yield core._script("override", project, ["list"], writes=False)
    core._check_reply(reply)
    now_ms = as_int(reply[1])
    out = []
    for oid, raw in zip(reply[2::2], reply[3::2], strict=True):
        record = parse_record(project, text(oid), text(raw), now_ms)
        if record is not None:
            out.append(record)
    return sorted(out, key=lambda o: (o.granted_at, o.id))


def parse_record(project: str, oid: str, raw: str, now_ms: int) -> Override | None:
    """One record of the overrides hash (``lib/overrides.lua``); None when unreadable."""
    f = raw.split(FS)
    if len(f) != 13 or f[0] not in _STATES:
        return None
    state, _iid, label, extra, granted, until, requested, approved, reason = f[:9]
    uses, ended, ended_by, end_reason = f[9:]
    budget, _, split = label.partition(LS)
    try:
        until_ms = int(until)
        fields: dict[str, Any] = {
            "extra_usd": nano_to_usd(int(extra)),
            "granted_at": _when(granted),
            "expires_at": _when(until_ms),
            "uses": int(uses or 0),
            "ended_at": _when(ended) if ended else None,
        }
    except (ValueError, OverflowError, OSError):  # a damaged record: not listed
        return None
    status = _STATES[state]
    if status == "active" and until_ms <= now_ms:  # its end has come; not yet processed
        status = "expired"
    return Override(
        id=oid,
        project=project,
        budget=budget,
        split_value=split or None,
        requested_by=requested,
        approved_by=approved,
        reason=reason,
        state=status,
        ended_by=ended_by or None,
        end_reason=end_reason or None,
        **fields,
    )


def _when(ms: Any) -> datetime:
    return datetime.fromtimestamp(as_int(ms) / 1000, UTC)
