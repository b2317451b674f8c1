"""What the core tells an observer (metrics) about each operation; nothing when none is set.

The core calls these only when ``LimiterCore.listener`` is set, so an uninstrumented limiter
pays one attribute check per operation. A listener's exception is logged, never raised into
the caller's reserve or settle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prism_limiter.engine._core import Held
    from prism_limiter.engine._records import Settlement


class Listener(Protocol):
    def reserved(self, held: Held, seconds: float) -> None:
        """A reserve was decided (allowed, denied, or degraded without Redis)."""

    def settled(
        self,
        project: str,
        model: str,
        tags: dict[str, str],
        settlement: Settlement,
        *,
        estimate: bool,
        seconds: float,
    ) -> None:
        """A settle answered; ``estimate``: it charged the estimate of an unsettled hold."""

    def released(self, project: str, reservation_id: str, released: bool, seconds: float) -> None:
        """A release answered (``released``: this call ended a live hold)."""

    def unavailable(self, operation: str, project: str) -> None:
        """Redis could not answer and the failure mode is closed: the call raises."""
