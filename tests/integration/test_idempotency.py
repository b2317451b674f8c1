"""Exactly once: reserve, settle and release repeated by id never double-hold/charge/release."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _helpers import held_nano, spent_nano

from prism_limiter import InvalidRequest, Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")


def test_repeated_reserve_holds_once(limiter: Any, policy: Policy, rclient: Any) -> None:
    """A retried reserve with the same id returns the first hold and holds nothing more."""
    limiter.apply_policy(policy)
    r1 = limiter.reserve("search", "gpt-4o-mini", est_tokens=500, reservation_id="req-1")
    held = held_nano(rclient, "search", "monthly")
    r2 = limiter.reserve("search", "gpt-4o-mini", est_tokens=500, reservation_id="req-1")
    assert r2.decision.replayed and r2.decision.hold_usd == r1.decision.hold_usd
    assert held_nano(rclient, "search", "monthly") == held
    r2.settle(input_tokens=500, output_tokens=10)
    assert held_nano(rclient, "search", "monthly") == 0


def test_reserve_id_reused_for_another_model_is_refused(limiter: Any, policy: Policy) -> None:
    """Reusing an id for a different request is a caller bug, reported clearly."""
    limiter.apply_policy(policy)
    limiter.reserve("search", "gpt-4o-mini", est_tokens=5, reservation_id="req-x")
    with pytest.raises(InvalidRequest, match="already used"):
        limiter.reserve("search", "gpt-4o", est_tokens=5, reservation_id="req-x")


def test_concurrent_repeats(redis_url: str, policy: Policy, rclient: Any) -> None:
    """16 threads repeating reserve, then settle, then release of one id: one of each effect."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(policy)
    with ThreadPoolExecutor(16) as pool:
        reserved = list(
            pool.map(
                lambda _: lim.reserve(
                    "search", "gpt-4o-mini", est_tokens=1000, reservation_id="same"
                ),
                range(16),
            )
        )
        assert sum(not r.decision.replayed for r in reserved) == 1
        hold = round(reserved[0].decision.hold_usd * 1e9)
        assert held_nano(rclient, "search", "monthly") == hold
        settles = list(
            pool.map(
                lambda _: lim.settle("search", "same", input_tokens=1000, output_tokens=100),
                range(16),
            )
        )
        assert sum(s.first for s in settles) == 1
        releases = list(pool.map(lambda _: lim.release("search", "same"), range(16)))
    assert not any(releases)
    assert held_nano(rclient, "search", "monthly") == 0
    assert spent_nano(rclient, "search", "monthly") == round(settles[0].cost_usd * 1e9)
    lim.close()
