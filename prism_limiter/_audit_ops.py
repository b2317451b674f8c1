"""Reading and verifying a project's audit stream (pure core operations; see ``_protocol``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from prism_limiter import _validate
from prism_limiter._audit_chain import (
    AuditCheckpoint,
    AuditVerification,
    ChainVerifier,
    pairs_of,
)
from prism_limiter._protocol import Command, Op, text
from prism_limiter.errors import InvalidRequest

if TYPE_CHECKING:
    from prism_limiter._core import LimiterCore

PAGE = 500


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
    yield from core._preflight()
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
