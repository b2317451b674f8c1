"""Prometheus metrics for a limiter (``pip install prism-limiter[metrics]``).

>>> from prism_limiter.metrics import instrument
>>> metrics = instrument(limiter, tag_keys=("feature",))   # the default registry, or registry=

Opt-in: an uninstrumented limiter pays one attribute check per operation. ``instrument``
registers a listener the shared core calls after each reserve, settle and release (sync and
async alike). Labels are bounded: project, model, outcome, reason, operation, and the values of
the tag keys you list (and only those); never a reservation id.

- ``prism_limiter_decisions_total{project,outcome,reason}``: reserve decisions (``allowed`` /
  ``denied``, the denial reason).
- ``prism_limiter_spend_usd_total{project,model,tag_<key>...}``: cost booked by this
  process's settles, estimate charges included. A counter only rises: a real settle that comes
  after its estimate was charged adds what it costs beyond the estimate, never less; holds
  the scripts charge at expiry are not seen. The ledger (``usage()``) stays the truth.
- ``prism_limiter_holds_live{project}``: holds this process took and has not ended, until their
  lease runs out.
- ``prism_limiter_operation_seconds{operation}``: reserve / settle / release latency.
- ``prism_limiter_degraded_total{project,operation}``: calls answered without Redis (open mode).
- ``prism_limiter_backend_unavailable_total{operation}``: calls that raised
  ``BackendUnavailable`` (closed mode).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "prism_limiter.metrics needs prometheus_client: pip install 'prism-limiter[metrics]'"
    ) from exc

from prism_limiter.errors import InvalidRequest

if TYPE_CHECKING:
    from prism_limiter.engine._base import BaseLimiter
    from prism_limiter.engine._core import Held
    from prism_limiter.engine._records import Settlement

__all__ = ["Metrics", "instrument"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_MAX_ESTIMATES = 100_000  # reservations charged their estimate, awaiting a real settle
_LABEL = re.compile(r"[^A-Za-z0-9_]")


class Metrics:
    """The metrics of one or more limiters (``attach`` each); the core's listener."""

    def __init__(
        self, registry: CollectorRegistry | None = None, tag_keys: tuple[str, ...] = ()
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.tag_keys = tuple(tag_keys)
        labels = ["tag_" + _LABEL.sub("_", k) for k in self.tag_keys]
        if len(set(labels)) != len(labels):
            raise InvalidRequest(f"tag keys {self.tag_keys} give the same label names {labels}")
        self.decisions = Counter(
            "prism_limiter_decisions",
            "Reserve decisions by project, outcome and denial reason.",
            ["project", "outcome", "reason"],
            registry=registry,
        )
        self.spend = Counter(
            "prism_limiter_spend_usd",
            "USD booked by settles of this process, by project and model.",
            ["project", "model", *labels],
            registry=registry,
        )
        self.latency = Histogram(
            "prism_limiter_operation_seconds",
            "Latency of reserve, settle and release, Redis round trips included.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.degraded = Counter(
            "prism_limiter_degraded",
            "Calls answered without Redis (failure_mode open).",
            ["project", "operation"],
            registry=registry,
        )
        self.unavailable_calls = Counter(
            "prism_limiter_backend_unavailable",
            "Calls that raised BackendUnavailable (failure_mode closed).",
            ["operation"],
            registry=registry,
        )
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, float]] = {}  # project -> reservation id -> lease end
        self._estimates: OrderedDict[tuple[str, str], float] = OrderedDict()
        registry.register(_HoldsCollector(self))

    # -- attaching --------------------------------------------------------------------------

    def attach(self, limiter: BaseLimiter) -> Metrics:
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
        self.latency.labels("reserve").observe(seconds)
        self.decisions.labels(
            held.project, "allowed" if d.allowed else "denied", d.reason or ""
        ).inc()
        if d.degraded:
            self.degraded.labels(held.project, "reserve").inc()
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
        self.latency.labels("settle").observe(seconds)
        if settlement.degraded:  # logged for a replay, not booked
            self.degraded.labels(project, "settle").inc()
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
        values = [tags.get(k, "") for k in self.tag_keys]
        self.spend.labels(project, model, *values).inc(amount)

    def released(self, project: str, reservation_id: str, released: bool, seconds: float) -> None:
        self.latency.labels("release").observe(seconds)
        self._end(project, reservation_id)

    def unavailable(self, operation: str, project: str) -> None:
        self.unavailable_calls.labels(operation).inc()

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


class _HoldsCollector:
    """``prism_limiter_holds_live``, computed when scraped (expired leases drop out)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "prism_limiter_holds_live",
            "Holds this process took and has not ended, until their lease runs out.",
            labels=["project"],
        )
        for project, n in sorted(self.metrics.live_holds().items()):
            family.add_metric([project], n)
        yield family


def instrument(
    limiter: BaseLimiter,
    *,
    registry: CollectorRegistry | None = None,
    tag_keys: tuple[str, ...] = (),
) -> Metrics:
    """Count ``limiter``'s decisions, spend, holds, latency and degraded calls in ``registry``
    (the default one when None). ``tag_keys``: the tags whose values become spend labels; keep
    them low-cardinality. Another limiter joins the same metrics with ``metrics.attach(it)``."""
    return Metrics(registry, tuple(tag_keys)).attach(limiter)
