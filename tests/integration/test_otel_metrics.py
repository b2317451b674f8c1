"""The OpenTelemetry metrics after real traffic, read with the SDK's in-memory reader."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from prism_limiter import BudgetExceeded, Limiter, Policy
from prism_limiter.integrations.otel import instrument

POLICY = """
[projects.p]
allow_models = ["gpt-4o"]
[[projects.p.budgets]]
id = "b"
usd = 1.0
"""


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


def test_decisions_spend_holds_and_latency(redis_url: str, rclient: Any) -> None:
    """Allowed and denied decisions, the spend by project/model/tag and live holds are seen."""
    reader = InMemoryMetricReader()
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(POLICY))
    instrument(lim, meter_provider=MeterProvider(metric_readers=[reader]), tag_keys=("team",))
    s = lim.reserve("p", "gpt-4o", est_tokens=100, max_output_tokens=10, tags={"team": "a"}).settle(
        input_tokens=100, output_tokens=10
    )
    live = lim.reserve("p", "gpt-4o", est_tokens=10, max_output_tokens=10, tags={"team": "a"})
    with pytest.raises(BudgetExceeded):
        lim.reserve("p", "gpt-4o", est_tokens=1_000_000)
    points = _points(reader)
    decisions = {
        (d.attributes["outcome"], d.attributes["reason"]): d.value
        for d in points["prism_limiter.decisions"]
    }
    assert decisions == {("allowed", ""): 2, ("denied", "budget"): 1}
    [spend] = points["prism_limiter.spend"]
    assert spend.attributes == {"project": "p", "model": "gpt-4o", "tag.team": "a"}
    assert spend.value == pytest.approx(s.cost_usd)
    [holds] = points["prism_limiter.holds_live"]
    assert holds.value == 1 and holds.attributes == {"project": "p"}
    assert sum(p.count for p in points["prism_limiter.operation.duration"]) == 4
    live.release()
    lim.close()
