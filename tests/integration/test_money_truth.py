"""Money at the edges: what status, decisions and settles report is what was booked."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit, budget_state, keyspace, rate_state

from prism_limiter import InvalidRequest, Policy, decision_headers

pytestmark = pytest.mark.usefixtures("rclient")

TWO_BUDGETS = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "keep"
usd = 10.0
[[projects.p.budgets]]
id = "drop"
usd = 5.0
"""
ONE_BUDGET = TWO_BUDGETS[: TWO_BUDGETS.index('[[projects.p.budgets]]\nid = "drop"')]


def test_status_shows_only_the_current_budgets(limiter: Any) -> None:
    """A budget removed from the policy leaves status; added back within its period, its
    spend is still there."""
    limiter.apply_policy(Policy.from_toml(TWO_BUDGETS))
    s = limiter.reserve("p", "gpt-4o", est_tokens=1000).settle(input_tokens=1000, output_tokens=10)
    assert {b.budget for b in limiter.status("p")} == {"keep", "drop"}
    limiter.apply_policy(Policy.from_toml(ONE_BUDGET))
    assert [b.budget for b in limiter.status("p")] == ["keep"]
    limiter.remove_policy("p")
    assert limiter.status("p") == []  # no policy for p: no budgets
    limiter.apply_policy(Policy.from_toml(TWO_BUDGETS))
    drop = next(b for b in limiter.status("p") if b.budget == "drop")
    assert drop.spent_usd == s.cost_usd


def test_decision_reports_the_override_in_force(limiter: Any) -> None:
    """decision.budgets[i].override_usd is the extra of the override the cap includes."""
    limiter.apply_policy(Policy.from_toml(ONE_BUDGET))
    limiter.grant_override(
        "p", "keep", usd=2.5, ttl_s=60, requested_by="ann", approved_by="cfo", reason="launch"
    )
    [state] = limiter.reserve("p", "gpt-4o", est_tokens=10).decision.budgets
    assert state.override_usd == 2.5 and state.cap_usd == 12.5


DENYING = """
[projects.d]
allow_models = ["gpt-4o*"]
[[projects.d.budgets]]
id = "tiny"
usd = 0.000001
"""


def test_a_denied_reservation_cannot_be_settled_or_released(limiter: Any, rclient: Any) -> None:
    """Settling or releasing a denied reservation (from its object or by id) is refused and
    books nothing; a retried reserve with the same id is decided afresh."""
    limiter.apply_policy(Policy.from_toml(DENYING))
    r = limiter.try_reserve("d", "gpt-4o", est_tokens=1000, reservation_id="job-9")
    assert not r.allowed
    before = keyspace(rclient)
    with pytest.raises(InvalidRequest, match="denied"):
        r.settle(input_tokens=1000, output_tokens=10)
    with pytest.raises(InvalidRequest, match="denied"):
        r.release()
    with pytest.raises(InvalidRequest, match="denied"):
        limiter.settle("d", "job-9", input_tokens=1000, output_tokens=10, model="gpt-4o")
    with pytest.raises(InvalidRequest, match="denied"):
        limiter.release("d", "job-9")
    assert keyspace(rclient) == before
    limiter.apply_policy(Policy.from_toml(DENYING.replace("0.000001", "10.0")))
    again = limiter.reserve("d", "gpt-4o", est_tokens=1000, reservation_id="job-9")
    assert again.allowed and not again.decision.replayed
    assert again.settle(input_tokens=1000, output_tokens=10).first
    model_denied = limiter.try_reserve("d", "claude-haiku-4-5", est_tokens=1)
    with pytest.raises(InvalidRequest, match="denied"):
        limiter.settle("d", model_denied.id, input_tokens=1, output_tokens=1, model="gpt-4o")


def test_settle_after_the_estimate_was_charged_books_the_difference(
    limiter: Any, rclient: Any
) -> None:
    """Leaving the block without a settle charges the estimate; a later settle books the
    difference to the actual usage once (budget, attribution, buckets); a third changes nothing."""
    limiter.apply_policy(
        Policy.from_toml(ONE_BUDGET + "[[projects.p.rate_limits]]\nid = 'tpm'\ntpm = 100000\n")
    )
    with limiter.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=500) as r:
        pass  # no settle: the estimate is charged
    estimate = limiter.usage("p").total
    assert estimate.input_tokens == 1000 and estimate.output_tokens == 500
    s = r.settle(input_tokens=200, output_tokens=50, cache_read_tokens=100)
    assert s.first and s.late and s.cost_usd < estimate.cost_usd
    again = limiter.settle("p", r.id, input_tokens=999, output_tokens=999)
    assert not again.first and again.cost_usd == s.cost_usd
    [state] = limiter.status("p")
    assert state.spent_usd == s.cost_usd and state.held_usd == 0
    total = limiter.usage("p").total
    assert (total.input_tokens, total.output_tokens, total.cache_read_tokens) == (200, 50, 100)
    assert total.requests == 1 and total.cost_usd == s.cost_usd
    level = rate_state(rclient, "p", "r:tpm")["tokens"]
    assert level >= (100_000 - 250) * 60_000  # the bucket holds the actual 250 tokens' debit
    [late] = audit(rclient, "p", "settle.late")
    assert late["reason"] == "after-estimate-charged"


CACHE_WRITES = """
[projects.w]
allow_models = ["writer"]
default_max_output_tokens = 0
[projects.w.prices."writer"]
input_mtok = 1.0
output_mtok = 1.0
cache_write_mtok = 2.0
[[projects.w.budgets]]
id = "b"
usd = 0.002
"""


def test_a_charged_estimate_is_the_hold_so_a_later_settle_stays_under_the_cap(
    limiter: Any,
) -> None:
    """The estimate charged at a normal exit is the hold (input at the dearest input class,
    here a cache write), not the input at the plain rate: the room it would free is not there
    for others, and a real settle that comes later, within its hold, keeps spent <= cap."""
    limiter.apply_policy(Policy.from_toml(CACHE_WRITES))
    with limiter.reserve("w", "writer", est_tokens=1000) as first:
        pass  # left without a settle: the $0.002 hold (all 1000 tokens may be cache writes)
    second = limiter.try_reserve("w", "writer", est_tokens=1000, max_cache_write_tokens=0)
    if second.allowed:  # $0.001, plain input: it fits only if the estimate freed room
        second.settle(input_tokens=1000, output_tokens=0)
    late = limiter.settle(
        "w", first.id, input_tokens=1000, output_tokens=0, cache_write_tokens=1000
    )
    assert late.late and not late.over_estimate and late.cost_usd == first.decision.hold_usd
    [state] = limiter.status("w")
    assert state.spent_usd <= state.cap_usd
    assert not second.allowed and state.spent_usd == 0.002


HEADERS = """
[projects.h]
allow_models = ["*"]
[[projects.h.budgets]]
id = "b"
usd = 1.0
warn_at = [0.5]
[projects.h.prices."flat"]
input_mtok = 1000.0
output_mtok = 0.0
"""


def test_headers_mean_the_same_on_200_and_429(limiter: Any) -> None:
    """Remaining USD is after this request's hold on both answers; the warning names a
    threshold only once booked spend reached it."""
    limiter.apply_policy(Policy.from_toml(HEADERS))
    held = limiter.reserve("h", "flat", est_tokens=600, max_output_tokens=0)  # $0.60 held
    ok = decision_headers(held.decision)
    assert ok["X-Prism-Budget-Remaining-USD"] == "0.400000"
    assert "X-Prism-Warning" not in ok  # 60% is only held, not spent
    denied = limiter.try_reserve("h", "flat", est_tokens=500, max_output_tokens=0)
    no = decision_headers(denied.decision)
    assert no["X-Prism-Budget-Remaining-USD"] == "-0.100000"  # 0.40 left, this one is 0.50
    assert no["X-Prism-Reason"] == "budget" and no["X-Prism-Reservation"] == denied.id
    held.settle(input_tokens=600, output_tokens=0)
    after = decision_headers(
        limiter.reserve("h", "flat", est_tokens=1, max_output_tokens=0).decision
    )
    assert after["X-Prism-Warning"] == "b>=0.5"


DAILY = """
[projects.d]
allow_models = ["*"]
[[projects.d.budgets]]
id = "day"
usd = 1.0
period = "day"
on_expiry = "charge"
"""


def _as_of_yesterday(rclient: Any, rid: str) -> None:
    """Move a booking to the day before: the budget's period, and the time the record ended
    (what a correction after midnight finds)."""
    budgets, holds = "prism:{d}:budgets", "prism:{d}:holds"
    spent, held, start, end, warned, nxt = rclient.hget(budgets, "day").decode().split(":")
    day = int(end) - int(start)
    hot = f"{spent}:{held}:{int(start) - day}:{start}:{warned}:{nxt}"
    rclient.hset(budgets, "day", hot)
    rec = rclient.hget(holds, rid).decode().split("\x1f")
    rec[12] = str(int(rec[12]) - day * 1000)  # R_FINISHED (ms)
    rclient.hset(holds, rid, "\x1f".join(rec))


@pytest.mark.parametrize("ended", ["estimate", "expired"])
def test_a_correction_of_a_closed_period_refunds_nothing_from_the_new_one(
    limiter: Any, rclient: Any, ended: str
) -> None:
    """A hold charged in full yesterday (its estimate, or its expiry) and settled after
    midnight for less: yesterday's period is closed, so the refund must not come out of
    today's spend, which would then understate it and let today go past its cap."""
    limiter.apply_policy(Policy.from_toml(DAILY))
    if ended == "estimate":
        with limiter.reserve("d", "gpt-4o-mini", est_tokens=10_000, max_output_tokens=0) as r:
            pass  # left without a settle: the estimate is charged
    else:
        r = limiter.reserve("d", "gpt-4o-mini", est_tokens=10_000, max_output_tokens=0, ttl_s=0.001)
        time.sleep(0.01)
        assert limiter.sweep("d") == 1
    _as_of_yesterday(rclient, r.id)
    today = limiter.reserve("d", "gpt-4o-mini", est_tokens=1000, max_output_tokens=0)
    today.settle(input_tokens=1000, output_tokens=0)
    assert budget_state(rclient, "d", "day")["spent"] == 150_000
    late = limiter.settle("d", r.id, input_tokens=0, output_tokens=0)  # it cost nothing
    assert late.first and late.cost_usd == 0
    assert budget_state(rclient, "d", "day")["spent"] == 150_000


def test_status_reports_the_cap_and_period_in_force(limiter: Any) -> None:
    """A cap raised (or a period changed) by a policy change shows in status at once, not
    only after the instance's next reserve: status answers what the next reserve enforces."""
    doc = "[projects.s]\nallow_models=['*']\n[[projects.s.budgets]]\nid='b'\nusd={}\nperiod='{}'\n"
    limiter.apply_policy(Policy.from_toml(doc.format(1, "month")))
    s = limiter.reserve("s", "gpt-4o", est_tokens=1000).settle(input_tokens=1000, output_tokens=0)
    limiter.apply_policy(Policy.from_toml(doc.format(2, "day")))
    [state] = limiter.status("s")
    assert state.cap_usd == 2 and state.spent_usd == s.cost_usd
    assert state.remaining_usd == pytest.approx(2 - s.cost_usd)
    assert state.resets_at is not None and state.period_start is not None
    assert (state.resets_at - state.period_start).days == 1
