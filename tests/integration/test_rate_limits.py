"""Rate limits: RPM/TPM buckets and concurrency slots, checked in the same atomic reserve."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _helpers import audit, keyspace

from prism_limiter import BudgetExceeded, Policy, RateLimited

pytestmark = pytest.mark.usefixtures("rclient")


def _policy(limits: str, budgets: str = "") -> Policy:
    return Policy.from_toml(
        "[projects.p]\nallow_models=['*']\ndefault_max_output_tokens=0\n" + budgets + limits
    )


def _reserve_until_denied(limiter: Any) -> tuple[int, RateLimited]:
    """Reserve and release until a rate limit denies (a round trip is far quicker than the
    refill, on any machine): how many fitted, and the denial."""
    for admitted in range(100):
        try:
            limiter.reserve("p", "gpt-4o", est_tokens=1).release()
        except RateLimited as exc:
            return admitted, exc
    raise AssertionError("100 requests and no denial")


def test_rpm_retry_after_is_exact(limiter: Any, rclient: Any) -> None:
    """Denied with retry_after_s; retried at that moment, the same request fits."""
    limiter.apply_policy(_policy("[[projects.p.rate_limits]]\nid='r'\nrpm=60\nburst=0.05\n"))
    admitted, denial = _reserve_until_denied(limiter)
    assert admitted >= 3  # a bucket of 60/min x 0.05 min = 3 requests, refilled one a second
    d = denial.decision
    assert d.limit == "r" and d.limit_kind == "rpm" and d.reason == "rate"
    assert denial.retry_after_s is not None and 0 < denial.retry_after_s <= 1.0
    time.sleep(denial.retry_after_s)
    limiter.reserve("p", "gpt-4o", est_tokens=1).release()
    [entry] = audit(rclient, "p", "rate.limited")
    assert entry["limit"] == "r" and entry["kind"] == "rpm" and entry["rid"] == d.reservation_id


def test_tpm_charges_estimate_and_settle_refunds(limiter: Any) -> None:
    """TPM holds est + max output at reserve; settle gives back what was not used."""
    limiter.apply_policy(_policy("[[projects.p.rate_limits]]\nid='t'\ntpm=600\n"))
    r = limiter.reserve("p", "gpt-4o", est_tokens=500)  # bucket of 600 tokens, 10 a second
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("p", "gpt-4o", est_tokens=400)
    assert exc.value.decision.limit_kind == "tpm"
    r.settle(input_tokens=100, output_tokens=0)  # 400 come back
    limiter.reserve("p", "gpt-4o", est_tokens=400).release()


def test_a_request_that_can_never_fit_is_told_so(limiter: Any) -> None:
    """More tokens than the bucket holds: a distinct reason and no retry time."""
    limiter.apply_policy(_policy("[[projects.p.rate_limits]]\nid='t'\ntpm=6000\nburst=0.1\n"))
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("p", "gpt-4o", est_tokens=601)
    d = exc.value.decision
    assert d.reason == "rate-too-large" and d.limit_kind == "tpm-too-large"
    assert d.retry_after_s is None and "never fit" in d.message


def test_overrun_becomes_debt(limiter: Any) -> None:
    """An actual above the charged tokens leaves the bucket in debt, delaying later requests."""
    limiter.apply_policy(_policy("[[projects.p.rate_limits]]\nid='t'\ntpm=600\n"))
    r = limiter.reserve("p", "gpt-4o", est_tokens=100)  # bucket of 600 tokens, 10 a second
    r.settle(input_tokens=1100, output_tokens=0)  # 1000 tokens over: the bucket goes negative
    with pytest.raises(RateLimited) as exc:  # -500 + 10/s: 100 tokens are 60 s away
        limiter.reserve("p", "gpt-4o", est_tokens=100)
    assert exc.value.retry_after_s is not None and exc.value.retry_after_s > 30


def test_concurrency_slots_are_freed_by_settle_release_exception_and_expiry(
    limiter: Any,
) -> None:
    """max_concurrent counts live holds; every way a hold ends frees its slot."""
    limiter.apply_policy(_policy("[[projects.p.rate_limits]]\nid='c'\nmax_concurrent=2\n"))
    a = limiter.reserve("p", "gpt-4o", est_tokens=1)
    z = limiter.reserve("p", "gpt-4o", est_tokens=1)
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("p", "gpt-4o", est_tokens=1)
    assert exc.value.decision.limit_kind == "concurrency"
    assert exc.value.retry_after_s is None
    a.settle(input_tokens=1, output_tokens=0)
    z.release()
    with pytest.raises(RuntimeError), limiter.reserve("p", "gpt-4o", est_tokens=1):
        raise RuntimeError("the LLM call failed")
    b = limiter.reserve("p", "gpt-4o", est_tokens=1, ttl_s=0.1)  # both slots: none leaked
    c = limiter.reserve("p", "gpt-4o", est_tokens=1)
    time.sleep(0.15)  # b's lease ends on the server clock
    d = limiter.reserve("p", "gpt-4o", est_tokens=1)  # fits only in the slot b's expiry freed
    c.release()
    d.release()
    e = limiter.reserve("p", "gpt-4o", est_tokens=1)
    f = limiter.reserve("p", "gpt-4o", est_tokens=1)
    e.release()
    f.release()
    assert b.settle(input_tokens=1, output_tokens=0).late


def test_denial_changes_no_bucket_and_no_budget(limiter: Any, rclient: Any) -> None:
    """All or nothing: a rate denial leaves every budget and every other bucket untouched."""
    limiter.apply_policy(
        _policy(
            "[[projects.p.rate_limits]]\nid='wide'\nrpm=1000\n"
            "[[projects.p.rate_limits]]\nid='narrow'\nrpm=1\n",
            "[[projects.p.budgets]]\nid='b'\nusd=10\n",
        )
    )
    limiter.reserve("p", "gpt-4o", est_tokens=1).release()
    before = keyspace(rclient)
    with pytest.raises(RateLimited):
        limiter.reserve("p", "gpt-4o", est_tokens=1)
    after = keyspace(rclient)
    # The denial writes its audit entry (and the stream's head: its seq, chain and flood
    # window, which housekeeping must visit when it ends: "due") and a short denial record.
    record = {b"prism:{p}:audit", b"prism:{p}:audit:head", b"prism:{p}:holds", b"prism:{p}:done"}
    for state in (before, after):
        state[b"prism:{p}:policy"].pop(b"due", None)
    assert {k: v for k, v in after.items() if k not in record} == {
        k: v for k, v in before.items() if k not in record
    }


def test_budget_is_reported_before_a_rate_limit(limiter: Any) -> None:
    """A request blocked for the period by a budget is not told to retry in a second."""
    limiter.apply_policy(
        _policy(
            "[[projects.p.rate_limits]]\nid='r'\nrpm=60\nburst=0.0167\n",
            "[[projects.p.budgets]]\nid='b'\nusd=0.00001\n",
        )
    )
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=1000)


def test_split_by_where_and_models(limiter: Any) -> None:
    """Rate limits are scoped like budgets: per tag value, tag filters, model globs."""
    limiter.apply_policy(
        _policy(
            "[[projects.p.rate_limits]]\nid='per-customer'\nrpm=1\n"
            "split_by='customer'\nwhere={feature='chat'}\nmodels=['gpt-4o*']\n"
        )
    )
    chat = {"feature": "chat"}
    limiter.reserve("p", "gpt-4o", est_tokens=1, tags={**chat, "customer": "a"}).release()
    with pytest.raises(RateLimited):
        limiter.reserve("p", "gpt-4o", est_tokens=1, tags={**chat, "customer": "a"})
    limiter.reserve("p", "gpt-4o", est_tokens=1, tags={**chat, "customer": "b"}).release()
    limiter.reserve("p", "gpt-4o", est_tokens=1, tags={"customer": "a"}).release()
    limiter.reserve("p", "claude-haiku-4-5", est_tokens=1, tags={**chat, "customer": "a"}).release()


def test_status_lists_budgets_only(limiter: Any) -> None:
    """Rate-limit instances share the state hash but are not budget instances."""
    limiter.apply_policy(
        _policy(
            "[[projects.p.rate_limits]]\nid='c'\nmax_concurrent=5\n",
            "[[projects.p.budgets]]\nid='b'\nusd=1\n",
        )
    )
    r = limiter.reserve("p", "gpt-4o", est_tokens=1)
    assert [s.budget for s in limiter.status("p")] == ["b"]
    r.release()
