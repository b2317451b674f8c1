"""The history checker's comparison: the store, read through the public API, against the model.

``Checker`` reads each project's hold records, budget instances, ``status()``, ``usage()`` and
audit trail (``read_audit``, ``verify_audit``) and lists every difference from what
``_replay.Model`` says the history implies; ``Figures`` sums up what the run did.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from _helpers import budget_state, rate_state
from _replay import Model, dnano, tags_key
from _workload import COLD, HOT

from prism_limiter import Limiter, audit
from prism_limiter.engine._keys import instance_id


def _row(r: Any) -> tuple[int, ...]:
    return (
        round(r.cost_usd * 1e9),
        r.requests,
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.expired_holds,
    )


@dataclass
class _Seen:
    """What one project's audit stream holds, tallied as the model keeps it."""

    denials: Counter[tuple[str, ...]] = field(default_factory=Counter)
    expired: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    over: Counter[str] = field(default_factory=Counter)
    late: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    warns: Counter[tuple[str, str, float]] = field(default_factory=Counter)
    applied: int = 0


@dataclass
class Figures:
    """What a run did and what the check found, for docs/RELIABILITY.md."""

    operations: int = 0
    reservations: int = 0
    denials: int = 0
    expired: int = 0
    late_settles: int = 0
    over_estimates: int = 0
    unknown_settles: int = 0
    audit_entries: int = 0
    hot_cap_raises: int = 0
    hot_over_cap: int = 0  # spent - cap of the hot budget at the end (<= 0)
    over_cap: int = 0  # the largest spent - cap of any instance (nUSD) ...
    over_cap_bound: int = 0  # ... and what its bound allowed: its unchecked bookings
    at_cap: str = ""  # how many instances of each budget reached their cap
    ops: dict[str, int] = field(default_factory=dict)


class Checker:
    """Compare the store with the model; every mismatch is a line of ``problems``."""

    def __init__(
        self, model: Model, lim: Limiter, client: Any, since: datetime, *, kept_s: float
    ) -> None:
        self.m, self.lim, self.client, self.since = model, lim, client, since
        # Ended hold records are kept for the retention, denied ones for an hour at most: a
        # run at least that long finds some gone.
        self.elapsed_s = (datetime.now(UTC) - since).total_seconds()
        self.kept_s = kept_s
        self.problems = model.problems

    def fail(self, text: str) -> None:
        self.problems.append(text)

    def check(self) -> Figures:
        figures = Figures()
        for project in (HOT, *COLD):
            self.records(project)
            self.budgets(project)
            self.status(project)
            self.usage(project)
            figures.audit_entries += self.audit_trail(project)
        self.bounds(figures)
        m = self.m
        figures.operations = m.records
        figures.reservations = sum(1 for life in m.lives.values() if life.hold)
        figures.denials = sum(m.denials.values())
        figures.expired = len(m.expired)
        figures.late_settles = len(m.late)
        figures.over_estimates = sum(m.over.values())
        figures.unknown_settles = len(m.unknown)
        figures.hot_cap_raises = len(m.hot_caps) - 1
        figures.ops = dict(sorted(m.ops.items()))
        return figures

    def records(self, project: str) -> None:
        """Every reservation ended exactly once, in the state the history says."""
        raw = self.client.hgetall(f"prism:{{{project}}}:holds")
        stored = {k.decode(): v.decode().split("\x1f", 1)[0] for k, v in raw.items()}
        expected = {
            life.rid: life.state
            for life in self.m.lives.values()
            if life.project == project and life.state is not None
        }
        for rid in sorted(set(stored) | set(expected)):
            got, want = stored.get(rid), expected.get(rid)
            keep = min(self.kept_s, 3600) if want == "D" else self.kept_s
            dropped = got is None and want is not None and self.elapsed_s >= keep
            if got != want and not dropped:  # an ended record past its retention is gone
                self.fail(f"{project}/{rid}: stored {got}, history {want}")
        if self.client.zcard(f"prism:{{{project}}}:leases"):
            self.fail(f"{project}: leases left after the final sweep")

    def budgets(self, project: str) -> None:
        """Each instance's stored spent equals the model's, nothing is held, no rate instance
        counts a live hold."""
        fields = [k.decode() for k in self.client.hkeys(f"prism:{{{project}}}:budgets")]
        hot = [f for f in fields if "|" not in f]
        mine = {instance_id(b, s): (p, b, s) for p, b, s in self.m.touched if p == project}
        for iid in sorted(set(hot) | set(mine)):
            if iid.startswith("r:"):
                if rate_state(self.client, project, iid)["holds"] != 0:
                    self.fail(f"{project}/{iid}: the rate instance still counts holds")
                continue
            state = budget_state(self.client, project, iid)
            inst = mine.get(iid)
            want = self.m.spent[inst] if inst else None
            if inst is None or state["spent"] != want or state["held"] != 0:
                self.fail(f"{project}/{iid}: stored {state}, the history books {want}")

    def status(self, project: str) -> None:
        got = {
            (b.budget, b.split_value): (nano(b.spent_usd), nano(b.held_usd), nano(b.cap_usd))
            for b in self.lim.status(project)
        }
        want = {
            (b, s): (self.m.spent[(p, b, s)], 0, self.m.cap((p, b, s)))
            for p, b, s in self.m.touched
            if p == project
        }
        self.same(project, "status records", got, want)

    def usage(self, project: str) -> None:
        start = (self.since - timedelta(days=1)).date()
        end = (datetime.now(UTC) + timedelta(days=1)).date()
        report = self.lim.usage(project, start, end)
        got: dict[tuple[str, ...], tuple[int, ...]] = {("total",): _row(report.total)}
        got.update({("model", m): _row(r) for m, r in report.by_model.items()})
        for key, values in report.by_tag.items():
            got.update({("tag", key, v): _row(r) for v, r in values.items()})
        if report.total.requests == 0 and not report.by_model:
            got = {}
        want = self.m.usage_rows(project)
        self.same(project, "usage rows", got, want)

    def audit_trail(self, project: str) -> int:
        """Every decision the history implies has its entry, once; nothing else is there."""
        m, seen, entries = self.m, _Seen(), 0
        for e in self.lim.read_audit(project):
            self.see(project, e, seen)
            entries += 1

        def mine(d: dict[tuple[str, str], Any]) -> dict[str, Any]:
            return {rid: v for (p, rid), v in d.items() if p == project}

        want_denials = Counter({k: n for k, n in m.denials.items() if k[0] == project})
        self.same(project, "denials (sum of count per identity)", seen.denials, want_denials)
        self.same(project, "hold.expired", seen.expired, mine(m.expired))
        self.same(project, "settle.over_estimate", seen.over, Counter(mine(dict(m.over))))
        self.same(project, "settle.late", seen.late, mine(m.late))
        self.same(project, "settle.unknown", seen.unknown, mine(m.unknown))
        want_applied = len(m.hot_caps) if project == HOT else 1
        if seen.applied != want_applied:
            self.fail(f"{project}: {seen.applied} policy.applied entries, {want_applied} applies")
        self.warnings(project, seen.warns)
        verification = self.lim.verify_audit(project)
        if not verification.ok or verification.checked != entries:
            self.fail(f"{project}: the audit chain does not verify: {verification}")
        return entries

    def see(self, project: str, e: audit.AuditEvent, seen: _Seen) -> None:
        """Tally one entry; one that names a reservation must match what its history did."""
        if isinstance(e, audit.BudgetBlocked | audit.RateLimited | audit.ModelDenied):
            identity = (project, *self.identity(e))
            seen.denials[identity] += e.count
            if e.rid not in self.m.denied_rids.get(identity, {}):
                self.fail(f"{project}: {e.event} entry for {e.rid}, not denied so: {identity}")
        elif isinstance(e, audit.HoldExpired):
            self.once(project, e.event, e.rid, seen.expired)
            seen.expired[e.rid] = (dnano(e.amount_usd), e.reason, e.budget)
        elif isinstance(e, audit.SettleOverEstimate):
            seen.over[e.rid] += 1
            life = self.m.lives[(project, e.rid)]
            if (dnano(e.amount_usd), dnano(e.hold_usd)) != (life.cost, life.hold):
                self.fail(f"{project}: {e} does not match cost {life.cost}, hold {life.hold}")
        elif isinstance(e, audit.SettleLate):
            self.once(project, e.event, e.rid, seen.late)
            seen.late[e.rid] = (e.reason, dnano(e.amount_usd), dnano(e.correction_usd))
        elif isinstance(e, audit.SettleUnknown):
            self.once(project, e.event, e.rid, seen.unknown)
            seen.unknown[e.rid] = dnano(e.amount_usd)
        elif isinstance(e, audit.BudgetWarn):
            seen.warns[(e.budget, e.split or "", e.threshold)] += 1
            if dnano(e.spent_usd) < math.ceil(dnano(e.cap_usd) * e.threshold):
                self.fail(f"{project}: {e} fired below its threshold")
        elif isinstance(e, audit.PolicyApplied):
            seen.applied += 1
        else:
            self.fail(f"{project}: an entry the history does not explain: {e}")

    def identity(self, e: Any) -> tuple[str, ...]:
        tags = tags_key(e.tags)
        if isinstance(e, audit.BudgetBlocked):
            return ("budget.blocked", e.budget, e.split or "", e.model, tags, e.reason)
        if isinstance(e, audit.RateLimited):
            return ("rate.limited", e.limit, e.split or "", e.kind, e.model, tags, e.reason)
        return ("model.denied", e.model, tags, e.reason)

    def once(self, project: str, event: str, rid: str, seen: dict[str, Any]) -> None:
        if rid in seen:
            self.fail(f"{project}: a second {event} entry for {rid}")

    def same(self, project: str, what: str, got: Any, want: Any) -> None:
        if got != want:
            keys = set(got) | set(want)
            diff = {k: (got.get(k), want.get(k)) for k in keys if got.get(k) != want.get(k)}
            shown = dict(sorted(diff.items(), key=str)[:10])
            self.fail(f"{project}: {what} differ in {len(diff)} (store, history): {shown}")

    def warnings(self, project: str, warns: Counter[tuple[str, str, float]]) -> None:
        """Each threshold fires at most once per instance; once spent reached it, exactly
        once; never where spent could not have reached it."""
        m = self.m
        for inst in sorted((i for i in m.touched if i[0] == project), key=str):
            _, budget, split = inst
            spec = next(s for s in m.specs(project) if s.id == budget)
            for f in spec.warn_at:
                n = warns.pop((budget, split or "", f), 0)
                at = math.ceil(m.cap(inst) * f)
                fixed_cap = project != HOT or len(m.hot_caps) == 1
                reachable = m.spent[inst] + m.refunds[inst] >= at or not fixed_cap
                if n > 1 or (m.spent[inst] >= at and n != 1) or (n and not reachable):
                    self.fail(f"{project}/{budget}[{split}] at {f}: {n} budget.warn entries")
        if warns:
            self.fail(f"{project}: budget.warn entries for instances never used: {dict(warns)}")

    def bounds(self, figures: Figures) -> None:
        """spent + held <= cap + what was booked without a check (overruns of a hold, late
        settles, unknown ids); the hot budget, whose holds are upper bounds and which books
        nothing unchecked, stays within its cap exactly."""
        m = self.m
        full: Counter[str] = Counter()
        used: Counter[str] = Counter()
        for inst in sorted(m.touched, key=lambda i: m.spent[i] - m.cap(i)):
            spent, cap, excess = m.spent[inst], m.cap(inst), m.excess[inst]
            figures.over_cap, figures.over_cap_bound = spent - cap, excess
            used[f"{inst[0]}/{inst[1]}"] += 1
            full[f"{inst[0]}/{inst[1]}"] += spent >= cap
            if spent > cap + excess:
                self.fail(f"{inst}: spent {spent} > cap {cap} + unchecked bookings {excess}")
            if inst[0] == HOT:
                figures.hot_over_cap = spent - cap
                if excess:
                    self.fail(f"{inst}: the hot budget booked {excess} nUSD past its holds")
        figures.at_cap = ", ".join(f"{k} {full[k]}/{n}" for k, n in sorted(used.items()))


def nano(usd: float) -> int:
    return round(usd * 1e9)
