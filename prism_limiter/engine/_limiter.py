"""``Limiter``: the synchronous face. Every method is "run a core operation"; only I/O is here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any, TypeVar

import redis

from prism_limiter.audit import AuditEvent
from prism_limiter.audit._chain import AuditVerification
from prism_limiter.audit._ops import AUDIT_BLOCK_MS, Since, start_id
from prism_limiter.engine import _validate
from prism_limiter.engine._backend import make_client
from prism_limiter.engine._base import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_RETRIES,
    DEFAULT_SOCKET_TIMEOUT_S,
    BaseLimiter,
    raise_for,
    usage_of,
)
from prism_limiter.engine._core import Held
from prism_limiter.engine._protocol import Op, Request, Script, map_error
from prism_limiter.engine._records import BudgetState, Override, Settlement, UsageReport
from prism_limiter.engine._reservation import Reservation
from prism_limiter.engine._scripts import Scripts
from prism_limiter.errors import PrismLimiterError
from prism_limiter.policy._policy import Policy
from prism_limiter.policy._policy_store import PolicyChange
from prism_limiter.pricing._pricing import TokenUsage

T = TypeVar("T")


class Limiter(BaseLimiter):
    """Governs LLM spend against budgets and model policy stored in Redis.

    Args:
        client: a ready ``redis.Redis`` or ``redis.cluster.RedisCluster`` (set its timeouts).
        namespace: the first part of every key (``<namespace>:{<project>}:...``).
        failure_mode: ``"closed"`` (default) raises ``BackendUnavailable`` when Redis cannot
            answer; ``"open"`` allows the request unchecked and logs ``prism.backend.degraded``.
    """

    _script_runner = Scripts

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str = "prism",
        *,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        **kwargs: Any,
    ) -> Limiter:
        """Connect to ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or the
        embedded ``memory://``, with a socket timeout and a bounded retry."""
        client = make_client(
            url,
            asyncio=False,
            socket_timeout=socket_timeout,
            retries=retries,
            max_connections=max_connections,
        )
        return cls(client, namespace, **kwargs)

    # -- the driver -------------------------------------------------------------------------

    def _io(self, request: Request) -> Any:
        try:
            if self._durable and request.writes:
                return self._scripts.durable(request)
            if isinstance(request, Script):
                return self._scripts(request.name, request.keys, request.args)
            return self._client.execute_command(*request.args)
        except redis.RedisError as exc:
            raise map_error(exc) from exc

    def _run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                try:
                    reply = self._io(request)
                except PrismLimiterError as exc:  # the core decides what a failure means
                    self._core.observe(exc, request)
                    request = op.throw(exc)
                else:
                    self._core.observe(None, request)
                    request = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # -- the API ----------------------------------------------------------------------------

    def apply_policy(
        self, policy: Policy, *, actor: str = "prism-limiter", prune: bool = False
    ) -> PolicyChange:
        """Store the projects ``policy`` names (and its ``[defaults]``) as the next version,
        leaving every other project's policy alone; with ``prune`` the document becomes the
        whole truth and projects it does not list lose theirs (``PolicyChange.removed``).
        Every worker follows the change from its next request."""
        return self._run(self._core.apply_policy(policy, actor, prune))

    def remove_policy(self, project: str, *, actor: str = "prism-limiter") -> PolicyChange:
        """Drop ``project`` from the stored policy: it falls back to ``[defaults]`` (or is
        denied ``no-policy``); audited ``policy.removed``."""
        return self._run(self._core.remove_policy(project, actor))

    def projects(self) -> list[str]:
        """Every project this namespace knows, sorted: those the stored policy lists and those
        registered under ``[defaults]`` (``<namespace>:projects``)."""
        return self._run(self._core.projects())

    def try_reserve(
        self,
        project: str,
        model: str,
        est_tokens: int,
        *,
        max_output_tokens: int | None = None,
        max_cache_write_tokens: int | None = None,
        tags: dict[str, str] | None = None,
        ttl_s: float | None = None,
        reservation_id: str | None = None,
        provider: str | None = None,
    ) -> Reservation:
        """Like :meth:`reserve` but a denial is returned (``r.allowed`` is False), not raised."""
        held = self._run(
            self._core.reserve(
                project,
                model,
                est_tokens,
                max_output_tokens=max_output_tokens,
                max_cache_write_tokens=max_cache_write_tokens,
                tags=tags,
                ttl_s=ttl_s,
                reservation_id=reservation_id,
                provider=provider,
            )
        )
        return Reservation(self, held)

    def reserve(
        self,
        project: str,
        model: str,
        est_tokens: int,
        *,
        max_output_tokens: int | None = None,
        max_cache_write_tokens: int | None = None,
        tags: dict[str, str] | None = None,
        ttl_s: float | None = None,
        reservation_id: str | None = None,
        provider: str | None = None,
    ) -> Reservation:
        """Check every limit that applies and hold the estimated cost.

        Raises:
            BudgetExceeded, ModelNotAllowed: the request is denied (``.decision`` says why).
            InvalidRequest: bad arguments, or an unknown price under ``on_unknown_price="deny"``.
            BackendUnavailable: Redis did not answer and the failure mode is closed.
        """
        r = self.try_reserve(
            project,
            model,
            est_tokens,
            max_output_tokens=max_output_tokens,
            max_cache_write_tokens=max_cache_write_tokens,
            tags=tags,
            ttl_s=ttl_s,
            reservation_id=reservation_id,
            provider=provider,
        )
        if not r.allowed:
            raise_for(r.decision)
        return r

    def settle(
        self,
        project: str,
        reservation_id: str,
        usage: Any = None,
        *,
        model: str | None = None,
        tags: dict[str, str] | None = None,
        **counts: Any,
    ) -> Settlement:
        """Settle a reservation from any process; idempotent (a repeat returns the first result).

        An id this project does not know is booked anyway (audited ``settle.unknown``) when
        ``model`` is given; otherwise ``InvalidRequest`` is raised.
        """
        tokens = usage_of(usage, counts)
        return self._run(self._core.settle(project, reservation_id, tokens, model=model, tags=tags))

    def release(self, project: str, reservation_id: str) -> bool:
        """Return a hold from any process; True if this call released it (idempotent)."""
        return self._run(self._core.release(project, reservation_id))

    def sweep(self, project: str) -> int:
        """Expire overdue holds now; the scripts also do it lazily. Returns how many expired."""
        return self._run(self._core.sweep(project))

    def status(self, project: str) -> list[BudgetState]:
        """One record per budget instance of ``project``, periods on the server clock."""
        return self._run(self._core.status(project))

    def usage(
        self, project: str, start: date | datetime | None = None, end: date | datetime | None = None
    ) -> UsageReport:
        """Attribution for UTC days ``start``..``end`` inclusive: per model, per tag.

        ``start`` defaults to today (UTC), ``end`` to ``start``; at most 400 days. Each bound is a
        ``date`` (a UTC day) or a ``datetime``: an aware one is converted to UTC, a naive one is
        read as UTC (not as the host's local time). Anything else, or ``start`` after ``end``,
        raises ``InvalidRequest``.
        """
        return self._run(self._core.usage(project, start, end))

    def grant_override(
        self,
        project: str,
        budget: str,
        *,
        usd: float,
        ttl_s: float,
        requested_by: str,
        approved_by: str,
        reason: str,
        split_value: str | None = None,
    ) -> Override:
        """Raise one budget instance's cap by ``usd`` for ``ttl_s`` seconds (at most a year).

        Two people: ``requested_by`` asked for it, ``approved_by`` (someone else) approved it;
        both names, and ``reason``, are required and audited (``override.granted``; the first
        reserve of each budget period that fits only thanks to it, ``override.used``; its end,
        ``override.expired`` or ``override.revoked``). A new grant replaces the instance's
        override in force.

        Raises:
            InvalidRequest: an unknown budget, a missing or needless ``split_value``, the same
                person twice, a missing reason, a bad amount or lifetime.
        """
        return self._run(
            self._core.grant_override(
                project,
                budget,
                split_value=split_value,
                usd=usd,
                ttl_s=ttl_s,
                requested_by=requested_by,
                approved_by=approved_by,
                reason=reason,
            )
        )

    def list_overrides(self, project: str) -> list[Override]:
        """Every override of ``project``: in force, and ended within the audit retention
        (``state``, ``uses``, who ended it), oldest grant first."""
        return self._run(self._core.list_overrides(project))

    def revoke_override(
        self, project: str, budget: str, *, actor: str, reason: str, split_value: str | None = None
    ) -> bool:
        """End an override now, ``actor`` revoking it (audited ``override.revoked`` with the
        grant's two names); True if one was in force (nothing is audited otherwise)."""
        return self._run(
            self._core.revoke_override(
                project, budget, split_value=split_value, actor=actor, reason=reason
            )
        )

    def verify_audit(self, project: str, checkpoint: Any = None) -> AuditVerification:
        """Check the project's audit stream: every entry's seq follows the one before and its
        chain matches its fields; the first bad entry is named (``bad_id``, ``problem``).

        ``checkpoint`` (the ``.checkpoint`` of an earlier result, or its dict) resumes after the
        entry it names, so entries trimmed by retention before it do not matter."""
        return self._run(self._core.verify_audit(project, checkpoint))

    def read_audit(
        self, project: str, since: Since = None, *, follow: bool = False
    ) -> Iterator[AuditEvent]:
        """The project's audit entries after ``since`` (a stream id, a checkpoint, a datetime;
        the beginning by default) as typed records (``prism_limiter.audit``), oldest first.

        With ``follow`` the iterator never ends: at the end of the stream it waits for new
        entries (blocking reads of ``AUDIT_BLOCK_MS``), carrying on from the last id."""
        after = start_id(since)
        _validate.name("project", project)
        return self._audit_entries(project, after, follow)

    def _audit_entries(self, project: str, after: str, follow: bool) -> Iterator[AuditEvent]:
        first = True
        while True:
            block = AUDIT_BLOCK_MS if follow else None
            events, after = self._run(self._core.audit_page(project, after, block, first))
            first = False
            yield from events
            if not events and not follow:
                return

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- used by Reservation ----------------------------------------------------------------

    def _settle_held(self, held: Held, usage: TokenUsage, estimate: bool = False) -> Settlement:
        op = self._core.settle(
            held.project, held.reservation_id, usage, held=held, estimate=estimate
        )
        return self._run(op)

    def _release_held(self, held: Held) -> bool:
        return self._run(self._core.release_held(held))
