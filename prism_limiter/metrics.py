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
from prism_limiter.integrations._recorder import Recorder

if TYPE_CHECKING:
    from prism_limiter.engine._base import BaseLimiter

__all__ = ["Metrics", "instrument"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_MAX_ESTIMATES = 100_000  # reservations charged their estimate, awaiting a real settle
_LABEL = re.compile(r"[^A-Za-z0-9_]")


class Metrics(Recorder):
    """The Prometheus metrics of one or more limiters (``attach`` each); the core's listener."""

    def __init__(
        self, registry: CollectorRegistry | None = None, tag_keys: tuple[str, ...] = ()
    ) -> None:
        super().__init__(tuple(tag_keys))
        registry = REGISTRY if registry is None else registry
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
        registry.register(_HoldsCollector(self))

    def _record_decision(self, project: str, outcome: str, reason: str) -> None:
        self.decisions.labels(project, outcome, reason).inc()

    def _record_latency(self, operation: str, seconds: float) -> None:
        self.latency.labels(operation).observe(seconds)

    def _record_degraded(self, project: str, operation: str) -> None:
        self.degraded.labels(project, operation).inc()

    def _record_spend(self, project: str, model: str, tags: tuple[str, ...], usd: float) -> None:
        self.spend.labels(project, model, *tags).inc(usd)

    def _record_unavailable(self, operation: str) -> None:
        self.unavailable_calls.labels(operation).inc()


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
