"""``AsyncLimiter``: the asyncio face; the same core operations as ``Limiter``, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
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
from prism_limiter.engine._log import logger
from prism_limiter.engine._plan import new_reservation_id
from prism_limiter.engine._protocol import Op, Request, Script, map_error
from prism_limiter.engine._records import BudgetState, Override, Settlement, UsageReport
from prism_limiter.engine._reservation import AsyncReservation, AsyncReserveCall
from prism_limiter.engine._scripts import AsyncScripts
from prism_limiter.errors import PrismLimiterError
from prism_limiter.policy._policy import Policy
from prism_limiter.policy._policy_store import PolicyChange
from prism_limiter.pricing._pricing import TokenUsage

T = TypeVar("T")


def _cancel_mark() -> tuple[asyncio.Task[Any] | None, int]:
    task = asyncio.current_task()
    return task, task.cancelling() if task is not None else 0


def _swallowed(mark: tuple[asyncio.Task[Any] | None, int]) -> bool:
    """Whether the task was cancelled during a call that returned anyway: Python 3.11's
    ``asyncio.wait_for`` (which redis-py awaits while sending) drops a cancellation that lands
    as its inner call completes. The call's work is done; the caller is told it was cancelled."""
    task, before = mark
    return task is not None and task.cancelling() > before


class AsyncLimiter(BaseLimiter):
    """The asyncio twin of :class:`Limiter`; takes ``redis.asyncio`` clients."""

    _script_runner = AsyncScripts

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
    ) -> AsyncLimiter:
        """Connect like :meth:`Limiter.from_url`, with an asyncio client."""
        client = make_client(
            url,
            asyncio=True,
            socket_timeout=socket_timeout,
            retries=retries,
            max_connections=max_connections,
        )
        return cls(client, namespace, **kwargs)

    def __init__(self, client: Any, namespace: str = "prism", **kwargs: Any) -> None:
        super().__init__(client, namespace, **kwargs)
        self._background: set[asyncio.Future[Any]] = set()
        # Abandons still in flight, by (project, id): a reserve of the same id waits for its own.
        self._abandoning: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def _io(self, request: Request) -> Any:
        try:
            if self._durable and request.writes:
                return await self._scripts.durable(request)
            if isinstance(request, Script):
                return await self._scripts(request.name, request.keys, request.args)
            return await self._client.execute_command(*request.args)
        except redis.RedisError as exc:
            raise map_error(exc) from exc

    async def _run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                try:
                    reply = await self._io(request)
                except PrismLimiterError as exc:  # the core decides what a failure means
                    self._core.observe(exc, request)
                    request = op.throw(exc)
                else:
                    self._core.observe(None, request)
                    request = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def apply_policy(
        self, policy: Policy, *, actor: str = "prism-limiter", prune: bool = False
    ) -> PolicyChange:
        """Store the projects ``policy`` names (and its ``[defaults]``) as the next version,
        leaving every other project's policy alone; with ``prune`` the document becomes the
        whole truth and projects it does not list lose theirs (``PolicyChange.removed``).
        Every worker follows the change from its next request."""
        return await self._run(self._core.apply_policy(policy, actor, prune))

    async def remove_policy(self, project: str, *, actor: str = "prism-limiter") -> PolicyChange:
        """Drop ``project`` from the stored policy: it falls back to ``[defaults]`` (or is
        denied ``no-policy``); audited ``policy.removed``."""
        return await self._run(self._core.remove_policy(project, actor))

    async def projects(self) -> list[str]:
        """Every project this namespace knows, sorted (see ``Limiter.projects``)."""
        return await self._run(self._core.projects())

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
    ) -> AsyncReserveCall:
        """Like :meth:`reserve` but a denial is returned (``r.allowed`` is False), not raised;
        awaited or entered with ``async with`` the same way."""
        rid = new_reservation_id() if reservation_id is None else reservation_id
        op = self._core.reserve(
            project,
            model,
            est_tokens,
            max_output_tokens=max_output_tokens,
            max_cache_write_tokens=max_cache_write_tokens,
            tags=tags,
            ttl_s=ttl_s,
            reservation_id=rid,
            provider=provider,
        )
        return AsyncReserveCall(self._reserve(op, project, rid, raise_denial=False))

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
    ) -> AsyncReserveCall:
        """Check every limit that applies and hold the estimated cost (see ``Limiter.reserve``).

        Returns an awaitable async context manager: ``r = await limiter.reserve(...)`` and
        ``async with limiter.reserve(...) as r:`` both take the hold and give the
        :class:`AsyncReservation`; the hold is taken when the call is awaited or entered, once.

        Cancellation-safe: if the caller is cancelled while the reserve is in flight (its
        outcome unknown), the reservation id is abandoned in the background: a hold it took is
        released, and a reserve still on its way finds the id ended and takes nothing.
        ``aclose()`` waits for it. The fast path runs in the caller's task (no task, no shield).

        Raises:
            BudgetExceeded, RateLimited, ModelNotAllowed: the request is denied (raised by the
                await, or on entering the ``async with`` block; ``.decision`` says why).
            InvalidRequest, BackendUnavailable: as ``Limiter.reserve``, at the same point.
            RuntimeError: the returned call is awaited a second time.
        """
        rid = new_reservation_id() if reservation_id is None else reservation_id
        op = self._core.reserve(
            project,
            model,
            est_tokens,
            max_output_tokens=max_output_tokens,
            max_cache_write_tokens=max_cache_write_tokens,
            tags=tags,
            ttl_s=ttl_s,
            reservation_id=rid,
            provider=provider,
        )
        return AsyncReserveCall(self._reserve(op, project, rid, raise_denial=True))

    async def _reserve(
        self, op: Op[Held], project: str, rid: str, *, raise_denial: bool
    ) -> AsyncReservation:
        pending = self._abandoning.get((project, rid))
        if pending is not None:
            # A reserve of this id was cancelled in flight and its abandon has not landed yet
            # (a caller retrying with its own id): sent now, this reserve could take a hold
            # that the abandon then releases under it. It goes after, and finds the id ended.
            await asyncio.wait((pending,))
        mark = _cancel_mark()
        try:
            held = await self._run(op)
        except asyncio.CancelledError:
            # Cancelled at an await of the op: its arguments were valid, and its reserve may
            # have run, may still run or never will. Abandoning the id settles all three.
            self._abandon(project, rid)
            raise
        if _swallowed(mark):
            if held.allowed and not held.finished and not held.degraded:
                self._abandon(project, rid)
            raise asyncio.CancelledError
        if raise_denial and not held.allowed:
            raise_for(held.decision)
        return AsyncReservation(self, held)

    def _abandon(self, project: str, rid: str) -> None:
        key = (project, rid)
        future = asyncio.ensure_future(self._run(self._core.abandon(project, rid)))
        self._abandoning[key] = future

        def done(f: asyncio.Future[Any]) -> None:
            if self._abandoning.get(key) is f:
                del self._abandoning[key]

        future.add_done_callback(done)
        self._track(future)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._background.add(future)
        future.add_done_callback(self._untrack)

    def _untrack(self, future: asyncio.Future[Any]) -> None:
        self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            # The lease still ends the hold; say so rather than lose the error.
            logger.warning("prism.release.failed", error=str(future.exception()))

    async def settle(
        self,
        project: str,
        reservation_id: str,
        usage: Any = None,
        *,
        model: str | None = None,
        tags: dict[str, str] | None = None,
        **counts: Any,
    ) -> Settlement:
        """Settle a reservation from any process; idempotent (see ``Limiter.settle``)."""
        tokens = usage_of(usage, counts)
        return await self._finishing(
            lambda: self._core.settle(project, reservation_id, tokens, model=model, tags=tags)
        )

    async def release(self, project: str, reservation_id: str) -> bool:
        """Return a hold from any process; True if this call released it (idempotent)."""
        return await self._finishing(lambda: self._core.release(project, reservation_id))

    async def sweep(self, project: str) -> int:
        """Expire overdue holds now; the scripts also do it lazily. Returns how many expired."""
        return await self._run(self._core.sweep(project))

    async def status(self, project: str) -> list[BudgetState]:
        """One record per budget instance of ``project``, periods on the server clock."""
        return await self._run(self._core.status(project))

    async def usage(
        self, project: str, start: date | datetime | None = None, end: date | datetime | None = None
    ) -> UsageReport:
        """Attribution for UTC days ``start``..``end`` inclusive: per model, per tag.

        ``start`` defaults to today (UTC), ``end`` to ``start``; at most 400 days. Each bound is a
        ``date`` (a UTC day) or a ``datetime``: an aware one is converted to UTC, a naive one is
        read as UTC (not as the host's local time). Anything else, or ``start`` after ``end``,
        raises ``InvalidRequest``.
        """
        return await self._run(self._core.usage(project, start, end))

    async def grant_override(
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
        return await self._run(
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

    async def list_overrides(self, project: str) -> list[Override]:
        """Every override of ``project``: in force, and ended within the audit retention
        (``state``, ``uses``, who ended it), oldest grant first."""
        return await self._run(self._core.list_overrides(project))

    async def revoke_override(
        self, project: str, budget: str, *, actor: str, reason: str, split_value: str | None = None
    ) -> bool:
        """End an override now, ``actor`` revoking it (audited ``override.revoked`` with the
        grant's two names); True if one was in force (nothing is audited otherwise)."""
        return await self._run(
            self._core.revoke_override(
                project, budget, split_value=split_value, actor=actor, reason=reason
            )
        )

    async def verify_audit(self, project: str, checkpoint: Any = None) -> AuditVerification:
        """Check the project's audit stream (see ``Limiter.verify_audit``)."""
        return await self._run(self._core.verify_audit(project, checkpoint))

    def read_audit(
        self, project: str, since: Since = None, *, follow: bool = False
    ) -> AsyncIterator[AuditEvent]:
        """The project's audit entries as typed records, an async iterator (see
        ``Limiter.read_audit``): ``async for event in limiter.read_audit(project): ...``."""
        after = start_id(since)
        _validate.name("project", project)
        return self._audit_entries(project, after, follow)

    async def _audit_entries(
        self, project: str, after: str, follow: bool
    ) -> AsyncIterator[AuditEvent]:
        first = True
        while True:
            block = AUDIT_BLOCK_MS if follow else None
            events, after = await self._run(self._core.audit_page(project, after, block, first))
            first = False
            for event in events:
                yield event
            if not events and not follow:
                return

    async def aclose(self) -> None:
        """Wait for the settles and releases still in flight (those of cancelled callers
        included), then close the client."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self._client.aclose()

    async def __aenter__(self) -> AsyncLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _finishing(self, make: Callable[[], Op[T]], held: Held | None = None) -> T:
        """Run a settle or release (``make`` builds the op) in the caller's task; if the
        caller is cancelled while it is in flight, it may or may not have run: running it
        again books or frees it exactly once (the scripts are idempotent by id), so it is
        finished in the background, and aclose() waits for it. A ``held`` reservation is
        then the background call's: leaving its block does not release it meanwhile (the
        room a release frees could be taken before a settle books the spend)."""
        mark = _cancel_mark()
        try:
            result = await self._run(make())
        except asyncio.CancelledError:
            if held is not None:
                held.finished = True
            self._track(asyncio.ensure_future(self._run(make())))
            raise
        if _swallowed(mark):
            raise asyncio.CancelledError  # done; the caller still learns it was cancelled
        return result

    async def _settle_held(
        self, held: Held, usage: TokenUsage, estimate: bool = False
    ) -> Settlement:
        return await self._finishing(
            lambda: self._core.settle(
                held.project, held.reservation_id, usage, held=held, estimate=estimate
            ),
            held,
        )

    async def _release_held(self, held: Held) -> bool:
        return await self._finishing(lambda: self._core.release_held(held), held)

    async def _release_shielded(self, held: Held) -> bool:
        """Release even while the calling task is being cancelled."""
        return await self._shielded(self._release_held(held))

    async def _shielded(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call`` to its end even if the caller is cancelled; ``aclose()`` waits for it."""
        task = asyncio.ensure_future(call)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)
