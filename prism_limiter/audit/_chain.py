"""The audit stream's hash chain, checked in Python (pure; the scripts write it: lib/audit.lua).

Every entry carries ``seq`` (1, 2, 3... per stream, no gap) and ``chain``::

    chain = sha1(previous chain + b"\\n" + b"".join(b"%d:%s," % (len(x), x)
                                                  for x in every field and value before chain))

with 40 zeros before seq 1. A verifier walks the stream in id order and names the first entry
where this fails: an edited entry (its chain does not match its fields), an inserted or
reordered one (its seq is not the next one), a deleted one (a gap in seq, or the head hash
ahead of the last entry). It resumes from a :class:`AuditCheckpoint` (the last entry it
verified), so a prefix trimmed by retention does not break it.

The hash is not keyed: someone who can write to Redis can rewrite the stream *and* recompute
every chain after the edit. What such a rewrite cannot match is a checkpoint kept outside
Redis (or an exported copy of the stream): keep the checkpoint ``verify_audit`` returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import msgspec

from prism_limiter.engine._records import _Record

GENESIS = b"0" * 40
UNAVAILABLE = b"unavailable"  # chain of an entry written without redis.sha1hex (memory://)

Pairs = Sequence[tuple[bytes, bytes]]


class AuditCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The last verified entry of a stream: pass it to ``verify_audit`` to resume there."""

    id: str
    seq: int
    chain: str


class AuditVerification(_Record, frozen=True, kw_only=True):
    """What ``verify_audit`` found.

    ``ok`` is False when an entry is bad: ``bad_id`` (the stream id of the first bad entry, or
    None when entries at the end are missing), ``bad_seq`` (the seq expected there) and
    ``problem`` say which and why. ``checkpoint`` is the last entry verified good (resume from
    it). ``chained`` is False when some entries carry no chain (``memory://``: only their seq
    was checked); ``trimmed`` when verification started, without a checkpoint, after a prefix
    the retention removed (whose first entry can then not be linked to its predecessor).
    """

    project: str
    ok: bool
    checked: int
    checkpoint: AuditCheckpoint | None = None
    bad_id: str | None = None
    bad_seq: int | None = None
    problem: str | None = None
    chained: bool = True
    trimmed: bool = False


def link(previous: bytes, pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The chain of an entry whose fields before ``chain`` are ``pairs``."""
    h = hashlib.sha1(previous + b"\n", usedforsecurity=False)
    for name, value in pairs:
        h.update(b"%d:%s,%d:%s," % (len(name), name, len(value), value))
    return h.hexdigest().encode()


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _seq(value: bytes | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 16:
        return None
    return int(value)


class ChainVerifier:
    """Fed a stream's entries in id order; stops at the first bad one.

    ``head``: the head hash's seq and chain, read before the first entry (entries written since
    come after it, with higher seqs)."""

    def __init__(
        self,
        project: str,
        checkpoint: AuditCheckpoint | None,
        head: tuple[bytes | None, bytes | None],
    ) -> None:
        self.project = project
        self._head_present = head[0] is not None
        self._head_seq, self._head_chain = _seq(head[0]), head[1]
        self.start = checkpoint
        self.last = checkpoint
        self._chain = checkpoint.chain.encode() if checkpoint else None
        self.checked = 0
        self.chained = True
        self.trimmed = False
        self.bad: tuple[str | None, int | None, str] | None = None

    def check_checkpoint(self, entries: list[tuple[str, Pairs]]) -> None:
        """The checkpoint's own entry, if the stream still holds it, must not have changed."""
        assert self.start is not None
        for entry_id, pairs in entries:
            chain = dict(pairs).get(b"chain")
            if chain is not None and chain != self.start.chain.encode():
                self.bad = (
                    entry_id,
                    self.start.seq,
                    f"entry {entry_id} (seq {self.start.seq}) no longer matches the checkpoint:"
                    " it was edited or replaced after it was verified",
                )

    def feed(self, entry_id: str, pairs: Pairs) -> bool:
        """Check one entry; False once an entry is bad (``self.bad`` says which and why)."""
        if self.bad is not None:
            return False
        fields = dict(pairs)
        seq = _seq(fields.get(b"seq"))
        expected = self.last.seq + 1 if self.last is not None else 1
        where = f"entry {entry_id}"
        if seq is None or not pairs or pairs[-1][0] != b"chain":
            self.bad = (entry_id, expected, f"{where} has no readable seq and chain: edited")
            return False
        chain = pairs[-1][1]
        if self.last is None and seq != 1:
            self.trimmed = True  # a prefix was trimmed: the first entry anchors the chain
        elif seq < expected:
            self.bad = (
                entry_id,
                expected,
                f"{where} has seq {seq} where seq {expected} was due: inserted, reordered or"
                " duplicated",
            )
            return False
        elif seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
            self.bad = (
                entry_id,
                expected,
                f"{missing} missing before {where} (seq {seq}): deleted, or moved (reordered)",
            )
            return False
        if chain == UNAVAILABLE:
            self.chained = False
        elif self._chain is not None and link(self._chain, pairs[:-1]) != chain:
            self.bad = (
                entry_id,
                seq,
                f"{where} (seq {seq}) does not match its chain: edited (or inserted with a"
                " forged chain)",
            )
            return False
        if seq == self._head_seq and chain != self._head_chain:
            self.bad = (
                entry_id,
                seq,
                f"{where} (seq {seq}) is not the one the audit head recorded: replaced",
            )
            return False
        self._chain = chain
        self.last = AuditCheckpoint(id=entry_id, seq=seq, chain=chain.decode())
        self.checked += 1
        return True

    def finish(self) -> AuditVerification:
        """The result, once every entry was fed."""
        if self.bad is None:
            self._check_head()
        bad_id, bad_seq, problem = self.bad or (None, None, None)
        return AuditVerification(
            project=self.project,
            ok=self.bad is None,
            checked=self.checked,
            checkpoint=self.last,
            bad_id=bad_id,
            bad_seq=bad_seq,
            problem=problem,
            chained=self.chained,
            trimmed=self.trimmed,
        )

    def _check_head(self) -> None:
        last_seq = self.last.seq if self.last is not None else 0
        seq = self._head_seq
        if seq is None:
            if self._head_present or last_seq:
                self.bad = (None, None, "the audit head (last seq and chain) is missing or bad")
            return
        if seq > last_seq:
            missing = f"seq {last_seq + 1}" if seq == last_seq + 1 else f"seq {last_seq + 1}..{seq}"
            self.bad = (None, last_seq + 1, f"{missing} missing at the end: deleted")
        elif self.start is not None and seq < self.start.seq:
            self.bad = (None, None, f"the audit head (seq {seq}) is behind the checkpoint: reset")
        elif (
            self.start is not None
            and seq == self.start.seq == last_seq
            and self._head_chain != self.start.chain.encode()
        ):
            self.bad = (None, seq, "the audit head does not match the checkpoint: rewritten")


def pairs_of(fields: object) -> list[tuple[bytes, bytes]]:
    """An entry's fields (a dict, as redis-py parses XRANGE, or a flat list) as byte pairs."""
    if isinstance(fields, dict):
        return [(_as_bytes(k), _as_bytes(v)) for k, v in fields.items()]
    flat = list(fields) if isinstance(fields, list | tuple) else []
    return [(_as_bytes(k), _as_bytes(v)) for k, v in zip(flat[::2], flat[1::2], strict=False)]
