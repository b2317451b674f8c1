"""A held reservation: scopes a hold, settles it, or releases it when the block fails.

``reserve()`` takes the hold when called; the ``with`` block only scopes it. Leaving the block
by any ``BaseException`` (cancellation included) without a settle releases the hold; leaving it
normally without a settle charges the estimate and logs ``prism.settle.estimate_charged``.
``AsyncLimiter.reserve()`` returns an :class:`AsyncReserveCall`, which takes the hold when it is
awaited or entered.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from prism_limiter.engine._base import estimate_usage, usage_of
from prism_limiter.engine._core import Held
from prism_limiter.engine._log import logger
from prism_limiter.engine._records import Decision, Settlement
from prism_limiter.errors import PrismLimiterError

if TYPE_CHECKING:
    from prism_limiter.engine._async import AsyncLimiter
    from prism_limiter.engine._limiter import Limiter


class _ReservationBase:
    __slots__ = ("_held",)

    def __init__(self, held: Held) -> None:
        self._held = held

    @property
    def id(self) -> str:
        return self._held.reservation_id

    @property
    def project(self) -> str:
        return self._held.project

    @property
    def decision(self) -> Decision:
        return self._held.decision

    @property
    def allowed(self) -> bool:
        return self._held.allowed

    @property
    def open(self) -> bool:
        """True while the hold is live (not settled, released, denied or degraded)."""
        held = self._held
        return held.allowed and not held.finished and not held.degraded

    def _unsettled(self) -> bool:
        """Whether leaving the block now has something to do: a live hold, or a degraded
        reservation (taken without Redis) not settled yet, whose estimate is still to book."""
        held = self._held
        return held.allowed and not held.finished

    def _log_estimate(self) -> None:
        logger.warning(
            "prism.settle.estimate_charged",
            project=self.project,
            reservation_id=self.id,
            model=self._held.model,
            hold_usd=self._held.decision.hold_usd,
        )

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"<{type(self).__name__} {self.project}/{self.id} {state}>"


class Reservation(_ReservationBase):
    """A reservation taken by :class:`Limiter`."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter, held: Held) -> None:
        super().__init__(held)
        self._limiter = limiter

    def settle(self, usage: Any = None, **counts: Any) -> Settlement:
        """Book the actual usage (a provider usage object/dict, or explicit counts)."""
        return self._limiter._settle_held(self._held, usage_of(usage, counts))

    def release(self) -> bool:
        """Return the hold unspent; True if this call released it."""
        return self._limiter._release_held(self._held)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._unsettled():
            return
        if exc_type is None:
            self._log_estimate()
            self._limiter._settle_held(self._held, estimate_usage(self._held), estimate=True)
            return
        if self._held.degraded:
            return  # no hold this worker knows of to give back
        try:
            self.release()
        except PrismLimiterError as err:  # the lease still expires it; never mask the original
            logger.warning("prism.release.failed", reservation_id=self.id, error=str(err))


class AsyncReservation(_ReservationBase):
    """A reservation taken by :class:`AsyncLimiter`."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: AsyncLimiter, held: Held) -> None:
        super().__init__(held)
        self._limiter = limiter

    async def settle(self, usage: Any = None, **counts: Any) -> Settlement:
        """Book the actual usage (a provider usage object/dict, or explicit counts)."""
        return await self._limiter._settle_held(self._held, usage_of(usage, counts))

    async def release(self) -> bool:
        """Return the hold unspent; True if this call released it."""
        return await self._limiter._release_held(self._held)

    async def __aenter__(self) -> AsyncReservation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._unsettled():
            return
        if exc_type is None:
            self._log_estimate()
            await self._limiter._settle_held(self._held, estimate_usage(self._held), estimate=True)
            return
        if self._held.degraded:
            return  # no hold this worker knows of to give back
        try:
            await self._limiter._release_shielded(self._held)
        except PrismLimiterError as err:
            logger.warning("prism.release.failed", reservation_id=self.id, error=str(err))


class AsyncReserveCall(Coroutine[Any, Any, AsyncReservation]):
    """What ``AsyncLimiter.reserve`` and ``try_reserve`` return: one pending reserve, to await or
    to enter (the way aiohttp's ``session.get()`` works)::

        r = await limiter.reserve(...)             # the AsyncReservation
        async with limiter.reserve(...) as r: ...  # awaited on enter, AsyncReservation.__aexit__
                                                   # on exit
        async with await limiter.reserve(...) as r: ...   # the same, in two steps

    Denials raise from the await (from ``__aenter__`` in the ``async with`` form). It is a
    coroutine, so ``asyncio.create_task(limiter.reserve(...))`` works too. The reserve runs
    once: like a coroutine, the call can be awaited or entered once only, and a second await
    raises ``RuntimeError`` rather than take a second hold. Call ``reserve()`` again for another
    reservation.
    """

    __slots__ = ("_coro", "_reservation", "_started")

    def __init__(self, coro: Coroutine[Any, Any, AsyncReservation]) -> None:
        self._coro = coro
        self._started = False
        self._reservation: AsyncReservation | None = None

    def __await__(self) -> Generator[Any, None, AsyncReservation]:
        if self._started:
            raise RuntimeError(
                "this reserve() call was already awaited; call reserve() again for another hold"
            )
        self._started = True
        return self._coro.__await__()

    # The coroutine protocol, for asyncio.create_task() and the like, which drive it directly.
    def send(self, value: Any) -> Any:
        self._started = True
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        self._started = True
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    async def __aenter__(self) -> AsyncReservation:
        self._reservation = await self
        return self._reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reservation is None:
            raise RuntimeError("__aexit__ without a successful __aenter__")
        await self._reservation.__aexit__(exc_type, exc, tb)
