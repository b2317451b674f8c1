"""Overrides: two-person approved, audited, expiring raises of a budget cap."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
from _helpers import audit, spent_nano

from prism_limiter import BudgetExceeded, InvalidRequest, Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["*"]
default_max_output_tokens = 0
[[projects.p.budgets]]
id = "daily"
usd = 0.001
period = "day"
[[projects.p.budgets]]
id = "per-customer"
usd = 1
split_by = "customer"
"""
)
# A price that makes every hold a round number: 1000 input tokens = $0.001.
ROUND = """
[projects.q]
allow_models = ["unit-model"]
default_max_output_tokens = 0
[projects.q.prices."unit-model"]
input_mtok = 1.0
output_mtok = 0.0
[[projects.q.budgets]]
id = "cap"
usd = 0.01
period = "month"
"""
NAMES = {"requested_by": "alice", "approved_by": "cfo@corp"}


def _fill(limiter: Any) -> None:
    limiter.reserve("p", "gpt-4o", est_tokens=400).settle(input_tokens=400, output_tokens=0)


def _grant(limiter: Any, budget: str = "daily", **kwargs: Any) -> Any:
    args: dict[str, Any] = {"usd": 1, "ttl_s": 60, "reason": "launch day", **NAMES, **kwargs}
    return limiter.grant_override("p", budget, **args)


def test_grant_lets_requests_through_audited_with_both_names(limiter: Any, rclient: Any) -> None:
    """Past the cap only with an override; override.granted once with both names, and
    override.used once in the period however many reserves need it."""
    limiter.apply_policy(POLICY)
    _fill(limiter)  # $0.001 spent: the cap is reached
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=100)
    grant = _grant(limiter, usd=0.0005)
    assert grant.extra_usd == 0.0005 and grant.approved_by == "cfo@corp"
    assert grant.requested_by == "alice" and grant.state == "active"
    first = limiter.reserve("p", "gpt-4o", est_tokens=50)
    first.settle(input_tokens=50, output_tokens=0)
    for _ in range(3):
        limiter.reserve("p", "gpt-4o", est_tokens=10).release()
    daily = next(s for s in limiter.status("p") if s.budget == "daily")
    assert daily.override_usd == 0.0005 and daily.cap_usd == pytest.approx(0.0015)
    [granted] = audit(rclient, "p", "override.granted")
    assert granted["requested_by"] == "alice" and granted["approved_by"] == "cfo@corp"
    assert granted["reason"] == "launch day" and granted["override"] == grant.id
    [used] = audit(rclient, "p", "override.used")  # once per period, not per reserve
    assert used["rid"] == first.id and used["approved_by"] == "cfo@corp"
    assert used["override"] == grant.id
    with pytest.raises(BudgetExceeded):  # the override has its own limit
        limiter.reserve("p", "gpt-4o", est_tokens=1000)
    [listed] = limiter.list_overrides("p")
    assert listed.id == grant.id and listed.uses == 4 and listed.state == "active"


def test_expiry_is_audited_once_with_both_names(limiter: Any, rclient: Any) -> None:
    """An override ends on the server clock; the first script past its end audits
    override.expired once (used or not), and the cap is back."""
    limiter.apply_policy(POLICY)
    _fill(limiter)
    used = _grant(limiter, ttl_s=0.2)
    limiter.reserve("p", "gpt-4o", est_tokens=1).release()
    unused = _grant(limiter, budget="per-customer", split_value="acme", ttl_s=0.2)
    time.sleep(0.25)  # past both ends (a lower bound: nothing waits on a window)
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=1)
    limiter.status("p")
    limiter.sweep("p")
    limiter.list_overrides("p")
    expired = {e["override"]: e for e in audit(rclient, "p", "override.expired")}
    assert set(expired) == {used.id, unused.id}  # each exactly once
    assert expired[used.id]["uses"] == "1" and expired[unused.id]["uses"] == "0"
    assert expired[unused.id]["split"] == "acme" and expired[unused.id]["reason"] == "expired"
    for e in expired.values():
        assert e["requested_by"] == "alice" and e["approved_by"] == "cfo@corp"
    states = {o.id: o for o in limiter.list_overrides("p")}
    assert states[used.id].state == "expired" and states[used.id].uses == 1
    assert states[unused.id].state == "expired" and states[unused.id].end_reason == "expired"
    assert all(s.override_usd == 0 for s in limiter.status("p"))


def test_revoke_while_requests_are_in_flight(limiter: Any, rclient: Any) -> None:
    """Holds taken under an override stay valid after it is revoked and settle normally; new
    reserves are held to the base cap. Audited once, with the grant's names and the revoker."""
    limiter.apply_policy(POLICY)
    _fill(limiter)
    grant = _grant(limiter)
    in_flight = [limiter.reserve("p", "gpt-4o", est_tokens=100) for _ in range(3)]
    assert limiter.revoke_override("p", "daily", actor="cfo@corp", reason="abuse") is True
    assert limiter.revoke_override("p", "daily", actor="cfo@corp", reason="again") is False
    with pytest.raises(BudgetExceeded):
        limiter.reserve("p", "gpt-4o", est_tokens=1)
    for r in in_flight:
        assert r.settle(input_tokens=100, output_tokens=0).first
    assert spent_nano(rclient, "p", "daily") == 1_000_000 + 3 * 250_000  # all booked
    [revoked] = audit(rclient, "p", "override.revoked")  # the no-op revoke audits nothing
    assert revoked["override"] == grant.id and revoked["actor"] == "cfo@corp"
    assert revoked["reason"] == "abuse" and revoked["grant_reason"] == "launch day"
    assert revoked["requested_by"] == "alice" and revoked["uses"] == "3"
    assert not audit(rclient, "p", "override.expired")
    [listed] = limiter.list_overrides("p")
    assert listed.state == "revoked" and listed.ended_by == "cfo@corp"


def test_a_new_grant_replaces_the_one_in_force(limiter: Any, rclient: Any) -> None:
    limiter.apply_policy(POLICY)
    old = _grant(limiter)
    new = _grant(limiter, usd=2, approved_by="cto")
    [ended] = audit(rclient, "p", "override.revoked")
    assert ended["override"] == old.id and ended["reason"] == "replaced"
    assert ended["actor"] == "cto"
    states = {o.id: o.state for o in limiter.list_overrides("p")}
    assert states == {old.id: "revoked", new.id: "active"}
    daily = next(s for s in limiter.status("p") if s.budget == "daily")
    assert daily.override_usd == 2


def test_split_budget_override_targets_one_value(limiter: Any) -> None:
    limiter.apply_policy(POLICY)
    _grant(limiter, budget="per-customer", split_value="org:42", usd=2)
    per = {s.split_value: s for s in limiter.status("p") if s.budget == "per-customer"}
    assert per["org:42"].override_usd == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": "nope"},
        {"budget": "per-customer"},  # split budget without split_value
        {"budget": "daily", "split_value": "x"},
        {"budget": "daily", "usd": -1},
        {"budget": "daily", "usd": 0},
        {"budget": "daily", "ttl_s": 0},
        {"budget": "daily", "ttl_s": 367 * 86400},  # at most a year
        {"budget": "daily", "requested_by": ""},
        {"budget": "daily", "approved_by": ""},
        {"budget": "daily", "approved_by": "Alice"},  # the same person twice
        {"budget": "daily", "reason": ""},
        {"budget": "daily", "reason": "a\nb"},
    ],
)
def test_bad_override_is_refused(limiter: Any, kwargs: dict[str, Any]) -> None:
    limiter.apply_policy(POLICY)
    args: dict[str, Any] = {"usd": 1, "ttl_s": 60, "reason": "r", **NAMES, **kwargs}
    budget = args.pop("budget")
    with pytest.raises(InvalidRequest):
        limiter.grant_override("p", budget, **args)
    assert limiter.list_overrides("p") == []


def test_both_names_are_required(limiter: Any) -> None:
    limiter.apply_policy(POLICY)
    with pytest.raises(TypeError):
        limiter.grant_override("p", "daily", usd=1, ttl_s=60, approved_by="cfo", reason="r")


def _use(url: str, start: Any, out: Any) -> None:
    lim = Limiter.from_url(url, socket_timeout=5)
    start.wait()
    admitted = 0
    while True:
        try:
            r = lim.reserve("q", "unit-model", est_tokens=1000)
        except BudgetExceeded:
            break
        r.settle(input_tokens=1000, output_tokens=0)  # exactly the hold
        admitted += 1
    out.put(admitted)


@pytest.mark.slow
def test_concurrent_use_from_several_processes(redis_url: str, rclient: Any) -> None:
    """Four processes race through a $0.01 cap raised by $0.005, $0.001 a request: exactly 15
    are admitted, exactly 5 of them needed the override, override.used is audited once."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(ROUND))
    grant = lim.grant_override(
        "q", "cap", usd=0.005, ttl_s=600, requested_by="ann", approved_by="bob", reason="x"
    )
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_use, args=(redis_url, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    admitted = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert admitted == 15
    assert spent_nano(rclient, "q", "cap") == 15_000_000
    [used] = audit(rclient, "q", "override.used")
    assert used["override"] == grant.id
    [listed] = lim.list_overrides("q")
    assert listed.uses == 5
    assert lim.verify_audit("q").ok
    lim.close()
