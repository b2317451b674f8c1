"""What every metrics backend shares: the core's listener events turned into measurements.

A backend (Prometheus in ``prism_limiter.metrics``, OpenTelemetry in
``prism_limiter.integrations.otel``) implements the five ``_record_*`` methods; this class keeps
the bookkeeping they all need: which holds this process took and has not ended, and which
estimates a later real settle corrects (a counter only rises: only the difference is added).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Self

from prism_limiter.errors import InvalidRequest

if TYPE_CHECKING:
    from prism_limiter.engine._base import BaseLimiter
    from prism_limiter.engine._core import Held
    from prism_limiter.engine._records import Settlement

_MAX_ESTIMATES = 100_000  # reservations charged their estimate, awaiting a real settle


class Recorder:
    """The core's listener: attach it to limiters; a backend records what it hears."""

    def __init__(self, tag_keys: tuple[str, ...] = ()) -> None:
        self.tag_keys = tuple(tag_keys)
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, float]] = {}  # project -> reservation id -> lease end
        self._estimates: OrderedDict[tuple[str, str], float] = OrderedDict()

    # -- what a backend records -------------------------------------------------------------

    def _record_decision(self, project: str, outcome: str, reason: str) -> None:
        raise NotImplementedError

    def _record_latency(self, operation: str, seconds: float) -> None:
        raise NotImplementedError

    def _record_degraded(self, project: str, operation: str) -> None:
        raise NotImplementedError

    def _record_spend(self, project: str, model: str, tags: tuple[str, ...], usd: float) -> None:
        raise NotImplementedError

    def _record_unavailable(self, operation: str) -> None:
        raise NotImplementedError

    # -- attaching --------------------------------------------------------------------------

    def attach(self, limiter: BaseLimiter) -> Self:
        core = limiter._core
        if core.listener is not None and core.listener is not self:
            raise InvalidRequest("this limiter is already instrumented")
        core.listener = self
        return self

    def detach(self, limiter: BaseLimiter) -> None:
        if limiter._core.listener is self:
            limiter._core.listener = None

    # -- the listener -----------------------------------------------------------------------

    def reserved(self, held: Held, seconds: float) -> None:
        d = held.decision
        self._record_latency("reserve", seconds)
        self._record_decision(held.project, "allowed" if d.allowed else "denied", d.reason or "")
        if d.degraded:
            self._record_degraded(held.project, "reserve")
        elif d.allowed:
            until = d.expires_at.timestamp() if d.expires_at else time.time() + 600
            with self._lock:
                self._live.setdefault(held.project, {})[held.reservation_id] = until

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
        self._record_latency("settle", seconds)
        if settlement.degraded:  # logged for a replay, not booked
            self._record_degraded(project, "settle")
            return
        rid = settlement.reservation_id
        self._end(project, rid)
        if not settlement.first:  # a repeat: nothing was booked
            return
        amount = settlement.cost_usd
        with self._lock:
            if estimate:
                self._estimates[(project, rid)] = amount
                while len(self._estimates) > _MAX_ESTIMATES:
                    self._estimates.popitem(last=False)
            else:
                charged = self._estimates.pop((project, rid), None)
                if charged is not None:  # only the difference is booked now
                    amount = max(0.0, amount - charged)
        self._record_spend(project, model, tuple(tags.get(k, "") for k in self.tag_keys), amount)

    def released(self, project: str, reservation_id: str, released: bool, seconds: float) -> None:
        self._record_latency("release", seconds)
        self._end(project, reservation_id)

    def unavailable(self, operation: str, project: str) -> None:
        self._record_unavailable(operation)

    def _end(self, project: str, reservation_id: str) -> None:
        with self._lock:
            self._live.get(project, {}).pop(reservation_id, None)

    def live_holds(self) -> dict[str, int]:
        """Holds per project this process took and has not ended, leases not yet run out."""
        now = time.time()
        with self._lock:
            for holds in self._live.values():
                for rid in [r for r, until in holds.items() if until <= now]:
                    del holds[rid]
            return {p: len(h) for p, h in self._live.items()}
