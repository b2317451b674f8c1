"""Reading and verifying a project's audit stream (pure core operations; see ``_protocol``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from prism_limiter.audit import AuditEvent, parse_entry
from prism_limiter.audit._chain import (
    AuditCheckpoint,
    AuditVerification,
    ChainVerifier,
    pairs_of,
)
from prism_limiter.engine import _validate
from prism_limiter.engine._protocol import Command, Op, text
from prism_limiter.errors import InvalidRequest

if TYPE_CHECKING:
    from prism_limiter.engine._core import LimiterCore

PAGE = 500
# A following reader waits this long per read: well below the clients' socket timeout (1 s).
AUDIT_BLOCK_MS = 250
Since = str | datetime | AuditCheckpoint | None
_MAX_SEQ = 2**64 - 1


def _entries(reply: Any) -> list[tuple[str, Any]]:
    """``XRANGE`` entries as (id, fields)."""
    return [(text(entry_id), fields) for entry_id, fields in reply or []]


def checkpoint_of(value: object) -> AuditCheckpoint | None:
    """A checkpoint as returned by ``verify_audit`` (or its dict), checked."""
    if value is None or isinstance(value, AuditCheckpoint):
        return value
    try:
        return msgspec.convert(value, AuditCheckpoint)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f"checkpoint must be an AuditCheckpoint (id, seq, chain): {exc}"
        ) from None


def verify(core: LimiterCore, project: str, checkpoint: object) -> Op[AuditVerification]:
    """Walk the stream after ``checkpoint`` (from the start without one) and check every link."""
    project = _validate.name("project", project)
    start = checkpoint_of(checkpoint)
    yield from core._preflight(project)
    keys = core.keys(project)
    seq, chain = yield Command(("HMGET", keys.audit_head, "seq", "chain"))
    verifier = ChainVerifier(project, start, (seq, chain))
    after = "-"
    if start is not None:
        own = yield Command(("XRANGE", keys.audit, start.id, start.id))
        verifier.check_checkpoint([(i, pairs_of(f)) for i, f in _entries(own)])
        after = "(" + start.id
    while verifier.bad is None:
        page = _entries((yield Command(("XRANGE", keys.audit, after, "+", "COUNT", PAGE))))
        for entry_id, fields in page:
            if not verifier.feed(entry_id, pairs_of(fields)):
                break
        if len(page) < PAGE:
            break
        after = "(" + page[-1][0]
    return verifier.finish()


def start_id(since: Since) -> str:
    """The stream id to read after: the beginning, an entry id, a checkpoint, or just before a
    time (a naive datetime is UTC)."""
    if since is None:
        return "0-0"
    if isinstance(since, AuditCheckpoint):
        return since.id
    if isinstance(since, datetime):
        aware = since if since.tzinfo else since.replace(tzinfo=UTC)
        ms = int(aware.timestamp() * 1000)
        return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"
    if isinstance(since, str) and _stream_id(since):
        return since
    raise InvalidRequest(
        f"since must be a stream id ('1700000000000-0'), a datetime or a checkpoint, got {since!r}"
    )


def _stream_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit()) and len(value) <= 41


def page(
    core: LimiterCore, project: str, after: str, block_ms: int | None, count: int = PAGE
) -> Op[tuple[list[AuditEvent], str]]:
    """The entries after ``after`` (waiting up to ``block_ms`` for one when given), parsed, and
    the id to read after next time."""
    keys = core.keys(project)
    command: tuple[str | int, ...] = ("XREAD", "COUNT", count)
    if block_ms is not None:
        command += ("BLOCK", block_ms)
    reply = yield Command((*command, "STREAMS", keys.audit, after))
    entries: list[tuple[str, Any]] = []
    if isinstance(reply, dict):  # RESP3
        for stream in reply.values():
            entries += _entries(stream[0] if stream and isinstance(stream[0], list) else stream)
    else:
        for _key, stream in reply or []:
            entries += _entries(stream)
    events = [parse_entry(entry_id, _as_dict(fields)) for entry_id, fields in entries]
    return events, entries[-1][0] if entries else after


def _as_dict(fields: Any) -> dict[Any, Any]:
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=False))


def check_project(core: LimiterCore, project: str) -> Op[None]:
    """Validate before the first read (and fail fast while the circuit is open)."""
    _validate.name("project", project)
    yield from core._preflight(project)
