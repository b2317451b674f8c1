"""A held reservation: scopes a hold, settles it, or releases it when the block fails.

``reserve()`` takes the hold when called; the ``with`` block only scopes it. Leaving the block
by any ``BaseException`` (cancellation included) without a settle releases the hold; leaving it
normally without a settle charges the estimate and logs ``prism.settle.estimate_charged``.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from prism_limiter._base import estimate_usage, usage_of
from prism_limiter._core import Held
from prism_limiter._log import logger
from prism_limiter._records import Decision, Settlement
from prism_limiter.errors import PrismLimiterError

if TYPE_CHECKING:
    from prism_limiter._async import AsyncLimiter
    from prism_limiter._limiter import Limiter


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
        return self._held.decision.allowed

    @property
    def open(self) -> bool:
        """True while the hold is live (not settled, released, denied or degraded)."""
        return self._held.decision.allowed and not self._held.finished

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
        if not self.open:
            return
        if exc_type is None:
            self._log_estimate()
            self._limiter._settle_held(self._held, estimate_usage(self._held), estimate=True)
            return
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
        if not self.open:
            return
        if exc_type is None:
            self._log_estimate()
            await self._limiter._settle_held(self._held, estimate_usage(self._held), estimate=True)
            return
        try:
            await self._limiter._release_shielded(self._held)
        except PrismLimiterError as err:
            logger.warning("prism.release.failed", reservation_id=self.id, error=str(err))
