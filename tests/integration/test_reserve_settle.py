"""reserve -> settle / release on a real redis-server, through the sync and async faces."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from _helpers import audit, held_nano, spent_nano
from genai_prices import Usage, calc_price
from structlog.testing import capture_logs

from prism_limiter import BudgetExceeded, ModelNotAllowed, Policy

pytestmark = pytest.mark.usefixtures("rclient")


def test_hold_is_the_upper_bound_and_settle_refunds(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """The hold prices est input + max output; settle books the actual cost and refunds the rest."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=1200, max_output_tokens=400)
    expected_hold = calc_price(Usage(input_tokens=1200, output_tokens=400), "gpt-4o-mini")
    assert Decimal(str(r.decision.hold_usd)) == expected_hold.total_price
    assert held_nano(rclient, "search", "monthly") == int(expected_hold.total_price * 10**9)
    s = r.settle(input_tokens=1187, output_tokens=212, cache_read_tokens=1024)
    actual = calc_price(
        Usage(input_tokens=1187, output_tokens=212, cache_read_tokens=1024), "gpt-4o-mini"
    ).total_price
    assert Decimal(str(s.cost_usd)) == actual
    assert s.first and not s.over_estimate and not s.late
    assert held_nano(rclient, "search", "monthly") == 0
    assert spent_nano(rclient, "search", "monthly") == int(actual * 10**9)


def test_repeated_settle_changes_nothing_and_returns_the_first(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """A second settle (even with other numbers) returns the first result and books nothing."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=100)
    first = r.settle(input_tokens=100, output_tokens=10)
    spent = spent_nano(rclient, "search", "monthly")
    again = limiter.settle("search", r.id, input_tokens=5000, output_tokens=5000)
    assert again.cost_usd == first.cost_usd and not again.first
    assert spent_nano(rclient, "search", "monthly") == spent


def test_over_estimate_is_booked_and_audited(limiter: Any, policy: Policy, rclient: Any) -> None:
    """Actual above the hold is still booked (money is spent) and audited once."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=10, max_output_tokens=10)
    s = r.settle(input_tokens=10_000, output_tokens=2_000)
    assert s.over_estimate and s.cost_usd > s.hold_usd
    assert spent_nano(rclient, "search", "monthly") == round(s.cost_usd * 10**9)
    [entry] = audit(rclient, "search", "settle.over_estimate")
    assert entry["rid"] == r.id


def test_release_is_idempotent_and_never_after_settle(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """release returns the hold once; again, or after a settle, it changes nothing."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=100)
    assert r.release() is True
    assert limiter.release("search", r.id) is False
    assert held_nano(rclient, "search", "monthly") == 0
    r2 = limiter.reserve("search", "gpt-4o-mini", est_tokens=100)
    r2.settle(input_tokens=1, output_tokens=1)
    spent = spent_nano(rclient, "search", "monthly")
    assert limiter.release("search", r2.id) is False
    assert spent_nano(rclient, "search", "monthly") == spent


def test_exception_in_block_releases_and_normal_exit_charges_estimate(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """Any exception leaving the block releases; a clean exit without settle charges the hold."""
    limiter.apply_policy(policy)
    with pytest.raises(KeyboardInterrupt), limiter.reserve("search", "gpt-4o-mini", est_tokens=50):
        raise KeyboardInterrupt
    assert held_nano(rclient, "search", "monthly") == 0
    assert spent_nano(rclient, "search", "monthly") == 0
    with capture_logs() as logs, limiter.reserve("search", "gpt-4o-mini", est_tokens=50) as r:
        pass
    assert [e["event"] for e in logs] == ["prism.settle.estimate_charged"]
    assert spent_nano(rclient, "search", "monthly") == round(r.decision.hold_usd * 10**9)
    assert held_nano(rclient, "search", "monthly") == 0


def test_reserve_then_settle_later_without_with(limiter: Any, policy: Policy, rclient: Any) -> None:
    """reserve() holds when called; the block only scopes it."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=80)
    assert held_nano(rclient, "search", "monthly") > 0
    r.settle({"prompt_tokens": 80, "completion_tokens": 5})
    assert held_nano(rclient, "search", "monthly") == 0


def test_settle_from_another_process_by_id(make_limiter: Any, policy: Policy, rclient: Any) -> None:
    """A second limiter (another worker) settles by project and id alone."""
    a, b = make_limiter(), make_limiter()
    a.apply_policy(policy)
    r = a.reserve("search", "gpt-4o", est_tokens=100, tags={"team": "growth"})
    s = b.settle("search", r.id, input_tokens=90, output_tokens=20)
    assert s.first and s.cost_usd == pytest.approx((90 * 2.5 + 20 * 10) / 1e6)
    assert held_nano(rclient, "search", "monthly") == 0


def test_unknown_id_is_booked_and_flagged_when_model_given(
    limiter: Any, policy: Policy, rclient: Any
) -> None:
    """A settle for an id never reserved is booked (money was spent) and audited once."""
    from prism_limiter import InvalidRequest

    limiter.apply_policy(policy)
    with pytest.raises(InvalidRequest, match="unknown"):
        limiter.settle("search", "ghost-1", input_tokens=10, output_tokens=10)
    s = limiter.settle("search", "ghost-1", input_tokens=1000, output_tokens=100, model="gpt-4o")
    assert s.unknown and s.first
    again = limiter.settle(
        "search", "ghost-1", input_tokens=1000, output_tokens=100, model="gpt-4o"
    )
    assert not again.first
    assert spent_nano(rclient, "search", "monthly") == round(s.cost_usd * 10**9)
    assert len(audit(rclient, "search", "settle.unknown")) == 1


def test_model_policy_deny_wins_and_is_audited(limiter: Any, policy: Policy, rclient: Any) -> None:
    """Deny wins over allow; not-allowed and denied models raise ModelNotAllowed, audited."""
    limiter.apply_policy(policy)
    with pytest.raises(ModelNotAllowed) as denied:
        limiter.reserve("search", "claude-opus-4-1", est_tokens=10)
    assert denied.value.decision.reason == "model-denied"
    with pytest.raises(ModelNotAllowed) as not_allowed:
        limiter.reserve("search", "gpt-5.2", est_tokens=10)
    assert not_allowed.value.decision.reason == "model-not-allowed"
    entries = audit(rclient, "search", "model.denied")
    assert [e["reason"] for e in entries] == ["model-denied", "model-not-allowed"]
    assert entries[0]["model"] == "claude-opus-4-1"


def test_empty_allow_list_allows_nothing(limiter: Any, rclient: Any) -> None:
    """An empty allow list means nothing is allowed; "*" allows everything."""
    limiter.apply_policy(Policy.from_toml("[projects.p]\n[projects.q]\nallow_models=['*']\n"))
    with pytest.raises(ModelNotAllowed):
        limiter.reserve("p", "gpt-4o", est_tokens=1)
    limiter.reserve("q", "gpt-4o", est_tokens=1).release()


def test_budget_denial_names_the_budget_and_is_audited(limiter: Any, rclient: Any) -> None:
    """A denial says which budget, by how much, and when it resets; budget.blocked audited."""
    limiter.apply_policy(
        Policy.from_toml(
            "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='tiny'\nusd=0.001\n"
            "period='day'\n"
        )
    )
    with pytest.raises(BudgetExceeded) as exc:
        limiter.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=1000)
    d = exc.value.decision
    assert d.budget == "tiny" and d.cap_usd == 0.001 and d.over_by_usd == pytest.approx(0.0115)
    assert d.resets_at is not None and d.resets_at.hour == 0
    [entry] = audit(rclient, "p", "budget.blocked")
    assert entry["budget"] == "tiny" and entry["rid"] == d.reservation_id
    assert held_nano(rclient, "p", "tiny") == 0


def test_try_reserve_returns_the_denial(limiter: Any, policy: Policy) -> None:
    """The non-raising form returns the decision for callers that answer 429 themselves."""
    limiter.apply_policy(policy)
    r = limiter.try_reserve("search", "claude-opus-4-1", est_tokens=1)
    assert not r.allowed and r.decision.reason == "model-denied"
    with r:
        pass


def test_warn_thresholds_fire_once_per_period(limiter: Any, rclient: Any) -> None:
    """Each warn_at threshold emits budget.warn exactly once, when booked spend reaches it."""
    limiter.apply_policy(
        Policy.from_toml(
            "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='b'\nusd=0.01\n"
            "warn_at=[0.5, 0.8]\n"
        )
    )
    for _ in range(9):  # 9 x $0.001
        limiter.reserve("p", "gpt-4o", est_tokens=400, max_output_tokens=0).settle(
            input_tokens=400, output_tokens=0
        )
    warns = audit(rclient, "p", "budget.warn")
    assert [w["threshold"] for w in warns] == ["0.5", "0.8"]
    r = limiter.reserve("p", "gpt-4o", est_tokens=100, max_output_tokens=0)
    assert {w.threshold for w in r.decision.warnings} == {0.8}


def test_split_by_and_where(limiter: Any, policy: Policy, rclient: Any) -> None:
    """split_by gives each tag value its own budget; where limits a budget to matching tags."""
    limiter.apply_policy(policy)
    chat = {"feature": "chat", "customer": "org:42"}
    other = {"feature": "chat", "customer": "a}{b"}
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=100, tags=chat)
    assert {b.budget for b in r.decision.budgets} == {"monthly", "per-customer"}
    assert [b.split_value for b in r.decision.budgets if b.budget == "per-customer"] == ["org:42"]
    r.settle(input_tokens=100, output_tokens=0)
    limiter.reserve("search", "gpt-4o-mini", est_tokens=100, tags=other).settle(
        input_tokens=100, output_tokens=0
    )
    r3 = limiter.reserve("search", "gpt-4o-mini", est_tokens=10, tags={"feature": "search"})
    assert [b.budget for b in r3.decision.budgets] == ["monthly"]
    r3.release()
    per = {(s.budget, s.split_value): s for s in limiter.status("search")}
    assert per["per-customer", "org:42"].spent_usd == pytest.approx(100 * 0.15 / 1e6)
    assert per["per-customer", "a}{b"].spent_usd == pytest.approx(100 * 0.15 / 1e6)
    assert per["monthly", None].spent_usd == pytest.approx(200 * 0.15 / 1e6)


def test_status_reports_every_instance(limiter: Any, policy: Policy) -> None:
    """status gives cap, spent, held, remaining, period start and reset per instance."""
    limiter.apply_policy(policy)
    r = limiter.reserve("search", "gpt-4o-mini", est_tokens=1000, max_output_tokens=0)
    [s] = limiter.status("search")
    assert (s.budget, s.cap_usd, s.spent_usd) == ("monthly", 1.0, 0.0)
    assert s.held_usd == pytest.approx(1000 * 0.15 / 1e6)
    assert s.remaining_usd == pytest.approx(1.0 - s.held_usd)
    assert s.period_start is not None and s.period_start.day == 1 and s.resets_at is not None
    r.release()


def test_unknown_price_deny_and_allow(limiter: Any, rclient: Any) -> None:
    """on_unknown_price=deny raises InvalidRequest; allow books cost 0 and audits it."""
    from prism_limiter import InvalidRequest

    limiter.apply_policy(
        Policy.from_toml(
            "[projects.d]\nallow_models=['*']\n[projects.a]\nallow_models=['*']\n"
            "on_unknown_price='allow'\n"
        )
    )
    with pytest.raises(InvalidRequest, match="no price"):
        limiter.reserve("d", "my-finetune-7b", est_tokens=10)
    r = limiter.reserve("a", "my-finetune-7b", est_tokens=10)
    assert r.decision.hold_usd == 0
    assert r.settle(input_tokens=10, output_tokens=10).cost_usd == 0
    assert len(audit(rclient, "a", "price.unknown")) == 1


def test_price_override_replaces_genai_prices(limiter: Any, rclient: Any) -> None:
    """A negotiated price in the policy is used instead of the list price."""
    limiter.apply_policy(
        Policy.from_toml(
            "[projects.p]\nallow_models=['*']\n[projects.p.prices.'gpt-4o']\n"
            "input_mtok=1.0\noutput_mtok=2.0\n"
        )
    )
    r = limiter.reserve("p", "gpt-4o", est_tokens=1_000_000, max_output_tokens=1_000_000)
    assert r.decision.hold_usd == pytest.approx(3.0)
    assert r.settle(input_tokens=500_000, output_tokens=0).cost_usd == pytest.approx(0.5)


def test_status_of_thousands_of_split_instances(redis_url: str, rclient: Any) -> None:
    """A budget split by customer has an instance per customer: status reports 3000 of them
    (more values than one Lua unpack can pass to a command)."""
    from prism_limiter import Limiter

    lim = Limiter.from_url(redis_url)
    lim.apply_policy(
        Policy.from_toml(
            "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='per-customer'\n"
            "usd=1\nsplit_by='customer'\n"
        )
    )
    for i in range(3000):
        lim.reserve(
            "p", "gpt-4o-mini", est_tokens=10, max_output_tokens=0, tags={"customer": f"c{i}"}
        )
    states = lim.status("p")
    assert len(states) == 3000
    assert {s.split_value for s in states} == {f"c{i}" for i in range(3000)}
    assert all(s.held_usd == pytest.approx(10 * 0.15 / 1e6) for s in states)
    lim.close()


def test_a_request_matching_thousands_of_limits(redis_url: str, rclient: Any) -> None:
    """1100 budgets and 1100 rate limits all matching one request (a generated policy): one
    reserve writes more values than one Lua unpack can pass to a command; it holds on every
    one, and the settle books every one."""
    from prism_limiter import Limiter

    n = 1100
    doc = "[projects.p]\nallow_models=['*']\n" + "".join(
        f"[[projects.p.budgets]]\nid='b{i}'\nusd=1\n"
        f"[[projects.p.rate_limits]]\nid='r{i}'\nmax_concurrent=5\n"
        for i in range(n)
    )
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(doc))
    r = lim.reserve("p", "gpt-4o-mini", est_tokens=1000, max_output_tokens=0)
    assert len(r.decision.budgets) == n
    assert all(held_nano(rclient, "p", f"b{i}") == 150_000 for i in range(n))
    r.settle(input_tokens=1000, output_tokens=0)
    states = lim.status("p")
    assert len(states) == n and all(s.spent_usd == pytest.approx(150_000 / 1e9) for s in states)
    assert all(s.held_usd == 0 for s in states)
    lim.close()
