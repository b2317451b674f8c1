"""Model-based: the ledger stays exact through any sequence of reserve, settle, release, expiry.

Zero, tiny, huge and cache-writing usages, split and unsplit rate limits. After every step:
held and spent are non-negative integers, each budget's held equals the sum of its live holds,
each rate instance counts exactly its live holds, spent <= cap while every settle stayed within
its hold; and against a reference model: each budget's spent and the attribution total equal
what the model booked (settles, charged expiries, late corrections), each audited event appears
exactly as often as the model made it happen, and every reservation ended exactly once. The same
machine runs on real Redis and on memory://.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from _helpers import budget_state, rate_state
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from prism_limiter import Limiter, Policy

POLICY = """
[projects.p]
allow_models = ["*"]
default_max_output_tokens = 100
[projects.p.prices."free-model"]
input_mtok = 0.0
output_mtok = 0.0
[projects.p.prices."dear-model"]
input_mtok = 1000000.0
output_mtok = 1000000.0
[[projects.p.budgets]]
id = "month"
usd = 3000000.0
[[projects.p.budgets]]
id = "per-customer"
usd = 0.05
period = "day"
split_by = "customer"
models = ["gpt-4o*", "claude-*", "free-model"]
[[projects.p.rate_limits]]
id = "per-customer-rpm"
rpm = 100000
split_by = "customer"
[[projects.p.rate_limits]]
id = "slots"
max_concurrent = 4
"""
CAPS = {"month": 3_000_000 * 10**9, "per-customer": 5 * 10**7}
SHAPES = ("exact", "under", "zero", "cache-write", "cache-write-1h", "cache-read", "over")


def _budgets_of(model: str, customer: str | None) -> list[str]:
    out = ["month"]
    if model != "dear-model":
        out.append("per-customer" if customer is None else f"per-customer={customer}")
    return out


def _rates_of(customer: str | None) -> list[str]:
    split = "r:per-customer-rpm" + ("" if customer is None else f"={customer}")
    return [split, "r:slots"]


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_ledger_properties(redis_url: str, backend: str) -> None:
    """Invariants hold after every step of random operation sequences (sync face), against a
    reference model of what each budget and the attribution total must have booked."""
    url = redis_url if backend == "redis" else "memory://ledger-properties"
    lim = Limiter.from_url(url)
    client: Any = lim.client
    policy = Policy.from_toml(POLICY)

    class Ledger(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            client.flushall()
            lim.apply_policy(policy)
            # rid -> (hold nUSD, budget instances, rate instances, est, out, reservation)
            self.live: dict[str, tuple[int, list[str], list[str], int, int, Any]] = {}
            self.ended: list[str] = []
            self.within_holds = True
            # The reference model: what must be booked, and how each reservation ended.
            self.spent: dict[str, int] = {}
            self.total = 0
            self.how: dict[str, tuple[str, int, list[str]]] = {}  # rid -> (how, hold, budgets)
            self.events = {"hold.expired": 0, "settle.over_estimate": 0, "settle.late": 0}

        def book(self, budgets: list[str], amount: int) -> None:
            for iid in budgets:
                self.spent[iid] = max(0, self.spent.get(iid, 0) + amount)
            self.total += amount

        @rule(
            customer=st.sampled_from(["a", "b", None]),
            model=st.sampled_from(["gpt-4o", "claude-haiku-4-5", "free-model", "dear-model"]),
            est=st.sampled_from([0, 1, 7, 1000, 40_000]),
            out=st.sampled_from([0, 1, 50, 2000]),
        )
        def reserve(self, customer: str | None, model: str, est: int, out: int) -> None:
            tags = {} if customer is None else {"customer": customer}
            r = lim.try_reserve("p", model, est_tokens=est, max_output_tokens=out, tags=tags)
            if r.allowed:
                hold = round(r.decision.hold_usd * 1e9)
                entry = (hold, _budgets_of(model, customer), _rates_of(customer), est, out, r)
                self.live[r.id] = entry

        @precondition(lambda self: self.live)
        @rule(data=st.data(), shape=st.sampled_from(SHAPES))
        def settle(self, data: st.DataObject, shape: str) -> None:
            rid = data.draw(st.sampled_from(sorted(self.live)))
            hold, budgets, _, est, out, r = self.live.pop(rid)
            counts = {"input_tokens": est, "output_tokens": out}
            if shape == "under":
                counts = {"input_tokens": est // 2, "output_tokens": out // 3}
            elif shape == "zero":
                counts = {"input_tokens": 0, "output_tokens": 0}
            elif shape == "cache-write":
                counts["cache_write_tokens"] = est
            elif shape == "cache-write-1h":
                counts["cache_write_tokens"] = counts["cache_write_1h_tokens"] = est
            elif shape == "cache-read":
                counts["cache_read_tokens"] = est
            elif shape == "over":
                counts = {"input_tokens": est * 3 + 10, "output_tokens": out + 10}
            s = r.settle(**counts)
            self.within_holds = self.within_holds and not s.over_estimate
            self.events["settle.over_estimate"] += s.over_estimate
            self.book(budgets, round(s.cost_usd * 1e9))
            self.how[rid] = ("settled", hold, budgets)
            self.ended.append(rid)

        @precondition(lambda self: self.live)
        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            rid = data.draw(st.sampled_from(sorted(self.live)))
            hold, budgets, *_, r = self.live.pop(rid)
            assert r.release()
            self.how[rid] = ("released", hold, budgets)
            self.ended.append(rid)

        @precondition(lambda self: self.live)
        @rule(data=st.data())
        def expire(self, data: st.DataObject) -> None:
            rid = data.draw(st.sampled_from(sorted(self.live)))
            client.zadd("prism:{p}:leases", {rid: 0})  # its lease has run out
            assert lim.sweep("p") == 1
            hold, budgets, *_ = self.live.pop(rid)
            self.book(budgets, hold)  # every budget here charges an expired hold
            self.events["hold.expired"] += 1
            self.how[rid] = ("expired", hold, budgets)
            self.ended.append(rid)

        @precondition(lambda self: self.ended)
        @rule(data=st.data())
        def repeat_an_ended_one(self, data: st.DataObject) -> None:
            rid = data.draw(st.sampled_from(self.ended))
            assert not lim.release("p", rid)
            again = lim.settle("p", rid, input_tokens=1, output_tokens=1)
            how, hold, budgets = self.how[rid]
            assert again.first is (how != "settled") and again.late is (how != "settled")
            if again.first:  # a correction, booked once
                cost = round(again.cost_usd * 1e9)
                self.book(budgets, cost - (hold if how == "expired" else 0))
                self.how[rid] = ("settled", hold, budgets)
                self.events["settle.late"] += 1
                self.within_holds = False

        @invariant()
        def ledger_is_exact(self) -> None:
            raw = client.hgetall("prism:{p}:budgets")
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            hot = {k: v for k, v in fields.items() if "|" not in k}
            for value in hot.values():
                assert all(part.lstrip("-").isdigit() for part in value.split(":") if part), value
            held: dict[str, int] = {}
            slots: dict[str, int] = {}
            for hold, budgets, rates, *_ in self.live.values():
                for iid in budgets:
                    held[iid] = held.get(iid, 0) + hold
                for iid in rates:
                    slots[iid] = slots.get(iid, 0) + 1
            for iid in {k for k in hot if not k.startswith("r:")} | set(held):
                state = budget_state(client, "p", iid)
                assert state["held"] == held.get(iid, 0), iid
                assert state["spent"] >= 0 and state["held"] >= 0, iid
                if self.within_holds:
                    assert state["spent"] <= CAPS[iid.split("=")[0]], iid
            for iid in {k for k in hot if k.startswith("r:")} | set(slots):
                assert rate_state(client, "p", iid)["holds"] == slots.get(iid, 0), iid
            for iid, expected in self.spent.items():
                assert budget_state(client, "p", iid)["spent"] == expected, iid

        @invariant()
        def attribution_and_audit_agree(self) -> None:
            report = lim.usage("p")
            assert round(report.total.cost_usd * 1e9) == self.total
            assert sum(r.requests for r in report.by_model.values()) == report.total.requests
            counts: dict[str, int] = {}
            for _, fields in client.xrange("prism:{p}:audit"):
                event = fields[b"event"].decode()
                counts[event] = counts.get(event, 0) + 1
            for event, expected in self.events.items():
                assert counts.get(event, 0) == expected, event
            states = {
                k.decode(): v.decode()[0] for k, v in client.hgetall("prism:{p}:holds").items()
            }
            assert all(states[rid] == "H" for rid in self.live)
            assert all(states[rid] in "SAX" + "RE" for rid in self.how)

    try:
        Ledger.TestCase.settings = settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        Ledger.TestCase().runTest()
    finally:
        lim.close()
