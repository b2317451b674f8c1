"""OpenTelemetry metrics for a limiter (``pip install prism-limiter[otel]``): the same measures
as the Prometheus ones in ``prism_limiter.metrics``, through a meter of your meter provider.

>>> from prism_limiter.integrations.otel import instrument
>>> instrument(limiter, tag_keys=("feature",))    # the global meter provider, or meter_provider=

Instruments (meter ``prism_limiter``): ``prism_limiter.decisions`` (counter; project, outcome,
reason), ``prism_limiter.spend`` (counter, USD; project, model, ``tag.<key>`` for the keys you
list), ``prism_limiter.operation.duration`` (histogram, s; operation),
``prism_limiter.degraded`` and ``prism_limiter.backend_unavailable`` (counters), and
``prism_limiter.holds_live`` (observable gauge; project). Attributes are bounded as for
Prometheus: never a reservation id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "prism_limiter.integrations.otel needs opentelemetry-api: pip install 'prism-limiter[otel]'"
    ) from exc

from prism_limiter.integrations._recorder import Recorder

if TYPE_CHECKING:
    from prism_limiter.engine._base import BaseLimiter

__all__ = ["OtelMetrics", "instrument"]


class OtelMetrics(Recorder):
    """The OpenTelemetry metrics of one or more limiters (``attach`` each)."""

    def __init__(self, meter_provider: Any = None, tag_keys: tuple[str, ...] = ()) -> None:
        super().__init__(tuple(tag_keys))
        provider = meter_provider or otel_metrics.get_meter_provider()
        meter = provider.get_meter("prism_limiter")
        self.decisions = meter.create_counter(
            "prism_limiter.decisions", description="Reserve decisions by outcome and reason."
        )
        self.spend = meter.create_counter(
            "prism_limiter.spend", unit="USD", description="USD booked by this process's settles."
        )
        self.duration = meter.create_histogram(
            "prism_limiter.operation.duration", unit="s", description="reserve/settle/release."
        )
        self.degraded = meter.create_counter(
            "prism_limiter.degraded", description="Calls answered without Redis (open mode)."
        )
        self.unavailable_calls = meter.create_counter(
            "prism_limiter.backend_unavailable", description="Calls that raised (closed mode)."
        )
        meter.create_observable_gauge(
            "prism_limiter.holds_live",
            callbacks=[self._observe_holds],
            description="Holds this process took and has not ended, until their lease ends.",
        )

    def _observe_holds(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"project": p}) for p, n in sorted(self.live_holds().items())]

    def _record_decision(self, project: str, outcome: str, reason: str) -> None:
        self.decisions.add(1, {"project": project, "outcome": outcome, "reason": reason})

    def _record_latency(self, operation: str, seconds: float) -> None:
        self.duration.record(seconds, {"operation": operation})

    def _record_degraded(self, project: str, operation: str) -> None:
        self.degraded.add(1, {"project": project, "operation": operation})

    def _record_spend(self, project: str, model: str, tags: tuple[str, ...], usd: float) -> None:
        attributes = {"project": project, "model": model}
        attributes.update({f"tag.{k}": v for k, v in zip(self.tag_keys, tags, strict=True)})
        self.spend.add(usd, attributes)

    def _record_unavailable(self, operation: str) -> None:
        self.unavailable_calls.add(1, {"operation": operation})


def instrument(
    limiter: BaseLimiter, *, meter_provider: Any = None, tag_keys: tuple[str, ...] = ()
) -> OtelMetrics:
    """Measure ``limiter`` through ``meter_provider`` (the global one when None)."""
    return OtelMetrics(meter_provider, tuple(tag_keys)).attach(limiter)
