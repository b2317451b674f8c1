"""``status``: the thresholds a budget passed, and how its bar divides the cap."""

from __future__ import annotations

from prism_limiter import BudgetState
from prism_limiter.cli._bars import WIDTH, budget_bar, cells
from prism_limiter.cli.status import passed


def _state(spent: float, cap: float, override: float = 0.0) -> BudgetState:
    return BudgetState(
        budget="b",
        cap_usd=cap + override,
        spent_usd=spent,
        held_usd=0.0,
        remaining_usd=cap + override - spent,
        override_usd=override,
    )


def test_thresholds_on_booked_spend_against_the_policy_cap() -> None:
    assert passed(_state(0.79, 1.0), (0.5, 0.8)) == (0.5,)
    assert passed(_state(0.8, 1.0), (0.8, 0.5)) == (0.5, 0.8)
    # an override raises what a reserve may use, not the thresholds (the rule of budget.warn)
    assert passed(_state(0.9, 1.0, override=10.0), (0.8,)) == (0.8,)
    assert passed(_state(0.0, 0.0), (0.8,)) == (0.8,)  # a zero cap is spent from the start


def test_bar_cells() -> None:
    assert cells([0.5, 0.25], 1.0, 24) == [12, 6]
    assert cells([0.0001, 0.0], 1.0, 24) == [1, 0]  # a little spend still shows
    assert cells([2.0, 1.0], 1.0, 24) == [24, 0]  # over the cap: clipped
    assert cells([1.0], 0.0, 24) == [0]
    bar = budget_bar(0.5, 0.25, 1.0, (0.8,))
    assert bar.plain == "█" * 6 + "▒" * 3 + "░" * 3
    assert len(bar.plain) == WIDTH
