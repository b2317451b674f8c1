"""Prometheus metrics: scraped from a registry after real traffic on both faces."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from prism_limiter import (
    BackendUnavailable,
    BudgetExceeded,
    InvalidRequest,
    Limiter,
    ModelNotAllowed,
    Policy,
)
from prism_limiter.metrics import Metrics, instrument

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini"]

[[projects.search.budgets]]
id = "daily"
usd = 0.01
period = "day"
"""


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The registry as Prometheus scrapes it: sample name and labels -> value."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_after_real_traffic(make_limiter: Any) -> None:
    lim = make_limiter()
    lim.apply_policy(Policy.from_toml(DOC))
    registry = CollectorRegistry()
    metrics = instrument(
        lim.inner if hasattr(lim, "inner") else lim, registry=registry, tag_keys=("feature",)
    )
    booked = 0.0
    for feature in ("chat", "chat", "search"):
        with lim.reserve(
            "search",
            "gpt-4o-mini",
            est_tokens=1000,
            max_output_tokens=100,
            tags={"feature": feature, "customer": "org:1"},
        ) as r:
            booked += r.settle(input_tokens=900, output_tokens=80).cost_usd
    r = lim.reserve("search", "gpt-4o-mini", est_tokens=1000, max_output_tokens=100)
    r.settle(input_tokens=900, output_tokens=80)  # a repeat books nothing
    booked += 0.000183  # 900 x $0.15 + 80 x $0.60 per MTok
    lim.release("search", r.id)
    with lim.reserve("search", "gpt-4o-mini", est_tokens=500, max_output_tokens=50):
        pass  # left without a settle: the estimate is charged
    booked += 0.000105
    live = lim.reserve("search", "gpt-4o-mini", est_tokens=10, max_output_tokens=10)
    released = lim.reserve("search", "gpt-4o-mini", est_tokens=10, max_output_tokens=10)
    released.release()
    with pytest.raises(ModelNotAllowed):
        lim.reserve("search", "gpt-4o", est_tokens=10)
    with pytest.raises(BudgetExceeded):
        lim.reserve("search", "gpt-4o-mini", est_tokens=100_000, max_output_tokens=1000)

    got = _scrape(registry)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert (
        value("prism_limiter_decisions_total", project="search", outcome="allowed", reason="") == 7
    )
    assert (
        value(
            "prism_limiter_decisions_total",
            project="search",
            outcome="denied",
            reason="model-not-allowed",
        )
        == 1
    )
    assert (
        value("prism_limiter_decisions_total", project="search", outcome="denied", reason="budget")
        == 1
    )
    spend = {
        labels: v for (name, labels), v in got.items() if name == "prism_limiter_spend_usd_total"
    }
    assert sum(spend.values()) == pytest.approx(booked, abs=1e-9)
    assert sum(spend.values()) == pytest.approx(lim.usage("search").total.cost_usd, abs=1e-9)
    chat = (("model", "gpt-4o-mini"), ("project", "search"), ("tag_feature", "chat"))
    assert spend[chat] == pytest.approx(2 * 0.000183)
    assert {dict(k)["tag_feature"] for k in spend} == {"chat", "search", ""}
    assert all("tag_customer" not in dict(k) for k in spend)  # only the listed tag keys
    assert value("prism_limiter_holds_live", project="search") == 1  # `live`, not yet ended
    assert value("prism_limiter_operation_seconds_count", operation="reserve") == 9
    assert value("prism_limiter_operation_seconds_count", operation="settle") == 5
    assert value("prism_limiter_operation_seconds_count", operation="release") == 2
    assert value("prism_limiter_operation_seconds_bucket", operation="reserve", le="+Inf") == 9
    assert not any("rid" in dict(labels) or "reservation" in name for name, labels in got)
    live.release()
    assert metrics.live_holds() == {"search": 0}


def test_late_settle_after_the_estimate_adds_only_the_difference(redis_url: str) -> None:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC))
        registry = CollectorRegistry()
        instrument(lim, registry=registry)
        with lim.reserve("search", "gpt-4o-mini", est_tokens=1000, max_output_tokens=100) as r:
            pass  # charged the estimate: 1000 x 0.15 + 100 x 0.60 = $0.00021
        lim.settle("search", r.id, input_tokens=2000, output_tokens=100)  # $0.00036 in all
        spent = registry.get_sample_value(
            "prism_limiter_spend_usd_total", {"project": "search", "model": "gpt-4o-mini"}
        )
        assert spent == pytest.approx(0.00036)
        assert lim.usage("search").total.cost_usd == pytest.approx(0.00036)


def test_degraded_and_unavailable_calls(redis_url: str) -> None:
    with Limiter.from_url(redis_url) as warm:
        warm.apply_policy(Policy.from_toml(DOC))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with Limiter.from_url("redis://127.0.0.1:1/0", failure_mode="open", retries=0) as lim:
        metrics.attach(lim)
        assert lim.reserve("search", "gpt-4o-mini", est_tokens=10).decision.degraded
    with Limiter.from_url("redis://127.0.0.1:1/0", retries=0) as closed:
        metrics.attach(closed)
        with pytest.raises(BackendUnavailable):
            closed.reserve("search", "gpt-4o-mini", est_tokens=10)
    assert (
        registry.get_sample_value(
            "prism_limiter_degraded_total", {"project": "search", "operation": "reserve"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "prism_limiter_backend_unavailable_total", {"operation": "reserve"}
        )
        == 1
    )


def test_one_listener_per_limiter_and_a_broken_one_never_breaks_a_call(
    redis_url: str, rclient: Any
) -> None:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC))
        metrics = instrument(lim, registry=CollectorRegistry())
        with pytest.raises(InvalidRequest, match="already instrumented"):
            instrument(lim, registry=CollectorRegistry())
        metrics.detach(lim)
        assert lim._core.listener is None

        class Broken:
            def reserved(self, *args: Any) -> None:
                raise RuntimeError("boom")

        lim._core.listener = Broken()  # type: ignore[assignment]
        with lim.reserve("search", "gpt-4o-mini", est_tokens=10) as r:
            r.settle(input_tokens=10, output_tokens=1)  # the listener has no `settled` either
        assert lim.usage("search").total.requests == 1
