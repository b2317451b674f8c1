"""The history checker's replay: what the store must hold, rebuilt from the logged history alone.

``Model`` replays the acknowledged operations of every worker's log (``_workload``) with the
rules the README documents, in integer nano-dollars: a hold is its estimate at the dearest input
price, a settle books its cost once (the difference to what an expiry or an estimate booked, for
a late one), an expiry charges or releases per budget, a charged estimate books the hold, and
each of these writes the audit entries it must. Each reservation id lives in one worker thread,
so its operations come in log order. What the replies said is checked against the rules on the
way (``problems``); ``check`` then compares the model with the store through the public API.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from _helpers import budget_state, rate_state
from _workload import COLD, HOT, PRICES, BudgetSpec, budgets_of

from prism_limiter import Limiter, audit
from prism_limiter.engine._keys import instance_id

ENDED = frozenset("SARXE")
Instance = tuple[str, str, str | None]  # project, budget id, split value
Row = list[int]  # nUSD, requests, input, output, cache read, cache write, expired holds


@dataclass
class Life:
    """One reservation id, as the model sees it."""

    project: str
    rid: str
    model: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    est: int = 0
    out: int = 0
    hold: int = 0
    state: str | None = None  # None: unknown to the store; D, H, S, A, R, X, E
    cost: int = 0
    instances: list[Instance] = field(default_factory=list)
    charges: list[bool] = field(default_factory=list)


def _nano(amount: Decimal) -> int:
    value = amount * 10**9
    assert value == value.to_integral_value(), amount
    return int(value)


def _tags_key(tags: dict[str, str]) -> str:
    return json.dumps(tags, sort_keys=True)


class Model:
    """The ledger, the attribution rows and the audit entries the history implies."""

    def __init__(self, hot_caps: list[int], scale: int) -> None:
        self.hot_caps = hot_caps  # every cap the hot budget had, in order
        self.scale = scale
        self.lives: dict[tuple[str, str], Life] = {}
        self.spent: Counter[Instance] = Counter()
        self.excess: Counter[Instance] = Counter()  # what raised spent + held without a check
        self.refunds: Counter[Instance] = Counter()  # negative corrections
        self.touched: set[Instance] = set()
        self.bookings: list[tuple[str, str, dict[str, str], Row]] = []
        self.denials: Counter[tuple[str, ...]] = Counter()
        self.denied_rids: dict[tuple[str, ...], Counter[str]] = {}
        self.expired: dict[tuple[str, str], tuple[int, str, str]] = {}
        self.over: Counter[tuple[str, str]] = Counter()
        self.late: dict[tuple[str, str], tuple[str, int, int]] = {}
        self.unknown: dict[tuple[str, str], int] = {}
        self.ops: Counter[str] = Counter()
        self.records = 0
        self.problems: list[str] = []

    # -- reading the history -----------------------------------------------------------------

    def replay(self, paths: Iterable[Path]) -> None:
        for path in paths:
            with path.open(encoding="utf-8") as f:
                for line in f:
                    self.apply(json.loads(line))

    def finish(self) -> None:
        """The holds nobody ended ran out of lease: the final sweep expired them."""
        for life in self.lives.values():
            if life.state == "H":
                self.expire(life)

    def problem(self, life: Life | None, text: str) -> None:
        where = f"{life.project}/{life.rid} ({life.state}): " if life else ""
        self.problems.append(where + text)

    def specs(self, project: str) -> tuple[BudgetSpec, ...]:
        return budgets_of(project, self.hot_caps[-1], self.scale)

    def life(self, rec: dict[str, Any]) -> Life:
        key = (rec["p"], rec["rid"])
        if key not in self.lives:
            self.lives[key] = Life(rec["p"], rec["rid"])
        return self.lives[key]

    def apply(self, rec: dict[str, Any]) -> None:
        op = rec["op"]
        self.records += 1
        self.ops[op if op != "settle" else f"settle/{rec['via']}"] += 1
        if op == "error":
            self.problem(None, rec["what"])
        elif op == "sweep":
            self.ops["swept"] += rec["expired"]
        elif op == "reserve":
            self.on_reserve(self.life(rec), rec)
        elif op == "settle":
            self.on_settle(self.life(rec), rec)
        elif op == "release":
            self.on_release(self.life(rec), rec)
        elif op == "estimate":
            life = self.life(rec)
            if life.state != "H":
                self.problem(life, "a with block charged the estimate of an ended hold")
            else:
                self.estimate(life)
        elif op == "refused":
            life = self.life(rec)
            if life.state != "D":
                self.problem(life, f"{rec['what']} refused for a reservation that was not denied")
        else:
            self.problem(None, f"unknown record {rec}")

    def on_reserve(self, life: Life, rec: dict[str, Any]) -> None:
        if rec.get("ended"):
            if life.state not in ENDED:
                self.problem(life, "reserve refused although the id had not ended")
            return
        if life.state == "H":  # a retry while held: the same hold, replayed
            if not (rec["ok"] and rec["replayed"] and rec["hold"] == life.hold):
                self.problem(life, f"a retried reserve was not replayed: {rec}")
            return
        if life.state not in (None, "D"):
            self.problem(life, "a reserve with an ended id was not refused")
            return
        if rec["replayed"]:
            self.problem(life, "a first reserve was reported replayed")
        life.model, life.tags, life.est, life.out = rec["m"], rec["tags"], rec["est"], rec["out"]
        if not rec["ok"]:
            life.state = "D"
            self.deny(life, rec)
            return
        hold = PRICES[life.model].hold(life.est, life.out)
        if rec["hold"] != hold:
            self.problem(life, f"held {rec['hold']} nUSD, the price says {hold}")
        life.hold, life.state = hold, "H"
        for spec in self.specs(life.project):
            inst = spec.instance(life.model, life.tags)
            if inst is not None:
                life.instances.append((life.project, *inst))
                life.charges.append(spec.on_expiry == "charge")
        self.touched.update(life.instances)

    def deny(self, life: Life, rec: dict[str, Any]) -> None:
        why, model, tags = rec["why"], life.model, _tags_key(life.tags)
        identity: tuple[str, ...] = (life.project,)
        if why == "budget":
            identity += ("budget.blocked", rec["budget"], rec["split"] or "", model, tags)
            identity += ("over-cap",)
            matched = [spec.instance(model, life.tags) for spec in self.specs(life.project)]
            if (rec["budget"], rec["split"]) not in matched:
                self.problem(life, f"denied by budget {rec['budget']}, which it does not match")
        elif why == "rate":
            identity += ("rate.limited", rec["limit"], rec["split"] or "", rec["kind"])
            identity += (model, tags, rec["kind"])
        elif why in ("model-denied", "model-not-allowed"):
            identity += ("model.denied", model, tags, why)
            if model in PRICES:
                self.problem(life, f"an allowed model was denied ({why})")
        else:
            self.problem(life, f"an unexpected denial: {rec}")
            return
        self.denials[identity] += 1
        self.denied_rids.setdefault(identity, Counter())[life.rid] += 1
        self.ops[f"denied/{life.project}/{why}"] += 1

    def on_settle(self, life: Life, rec: dict[str, Any]) -> None:
        tokens = (
            rec["input_tokens"],
            rec["output_tokens"],
            rec.get("cache_read_tokens", 0),
            rec.get("cache_write_tokens", 0),
        )
        if life.state == "S":  # a repeat: the first result, nothing booked
            if rec["first"] or rec["cost"] != life.cost:
                self.problem(life, f"a repeated settle was not a no-op: {rec}")
            return
        if rec["via"] == "unknown":
            if life.state is not None or not (rec["unknown"] and rec["first"]):
                self.problem(life, f"a settle of an unknown id: {rec}")
                return
            life.model, life.tags = rec["m"], rec["tags"]
            self.settle_unknown(life, rec["cost"], tokens)
            return
        if life.state == "H" and rec["late"]:
            self.expire(life)  # its lease ran out before this settle came
        if life.state not in ("H", "A", "R", "X", "E"):
            self.problem(life, f"a settle the store took: {rec}")
            return
        cost = PRICES[life.model].cost(*tokens)
        over = cost > life.hold and life.state in ("H", "A")
        said = (rec["cost"], rec["hold"], rec["first"], rec["late"], rec["over"], rec["unknown"])
        if said != (cost, life.hold, True, life.state != "H", over, False):
            self.problem(life, f"settle said {said}, expected cost {cost} over={over}")
        self.settle(life, cost, tokens)

    def on_release(self, life: Life, rec: dict[str, Any]) -> None:
        released = rec["released"]  # None: a with block left by an exception, reply unseen
        if life.state == "H":
            if released is False:
                self.expire(life)  # its lease ran out first
            else:
                self.post(life, [0] * len(life.instances), life.hold)
                life.state = "R"
        elif life.state in ENDED:
            if released:
                self.problem(life, "released twice")
        else:
            self.problem(life, f"a release the store took: {rec}")

    # -- the rules ---------------------------------------------------------------------------

    def post(self, life: Life, charges: list[int], unhold: int) -> None:
        """Book ``charges`` on the instances; spent + held moves by charge - unhold."""
        for inst, charge in zip(life.instances, charges, strict=True):
            self.spent[inst] += charge
            self.excess[inst] += max(0, charge - unhold)
            self.refunds[inst] += max(0, -charge)

    def use(self, life: Life, row: Row) -> None:
        self.bookings.append((life.project, life.model, life.tags, row))

    def expire(self, life: Life) -> None:
        charged = any(life.charges)
        self.post(life, [life.hold if c else 0 for c in life.charges], life.hold)
        if charged:
            self.use(life, [life.hold, 1, 0, 0, 0, 0, 1])
        life.state = "X" if charged else "E"
        names = ",".join(instance_id(b, s) for _, b, s in life.instances)
        self.expired[(life.project, life.rid)] = (
            life.hold,
            "charged" if charged else "released",
            names,
        )

    def estimate(self, life: Life) -> None:
        """Left without a settle: the hold, an upper bound of the cost, is booked."""
        self.post(life, [life.hold] * len(life.instances), life.hold)
        self.use(life, [life.hold, 1, life.est, life.out, 0, 0, 0])
        life.state, life.cost = "A", life.hold

    def settle(self, life: Life, cost: int, tokens: tuple[int, int, int, int]) -> None:
        before, hold, key = life.state, life.hold, (life.project, life.rid)
        n = len(life.instances)
        if before == "H":
            self.post(life, [cost] * n, hold)
            self.use(life, [cost, 1, *tokens, 0])
        elif before == "A":
            self.post(life, [cost - life.cost] * n, 0)
            t_in, t_out, t_cr, t_cw = tokens
            self.use(life, [cost - life.cost, 0, t_in - life.est, t_out - life.out, t_cr, t_cw, 0])
            self.late[key] = ("after-estimate-charged", cost, cost - life.cost)
        elif before == "X":
            self.post(life, [cost - (hold if c else 0) for c in life.charges], 0)
            self.use(life, [cost - hold, 0, *tokens, 0])
            self.late[key] = ("after-expiry-charged", cost, cost - hold)
        else:  # R or E: nothing was booked
            self.post(life, [cost] * n, 0)
            self.use(life, [cost, 1, *tokens, 0])
            reason = "after-release" if before == "R" else "after-expiry-released"
            self.late[key] = (reason, cost, cost)
        if cost > hold and before in ("H", "A"):
            self.over[key] += 1
        life.state, life.cost = "S", cost

    def settle_unknown(self, life: Life, cost: int, tokens: tuple[int, int, int, int]) -> None:
        expected = PRICES[life.model].cost(*tokens)
        if cost != expected:
            self.problem(life, f"an unknown id booked {cost} nUSD, the price says {expected}")
        for spec in self.specs(life.project):
            inst = spec.instance(life.model, life.tags)
            if inst is not None:
                life.instances.append((life.project, *inst))
        self.touched.update(life.instances)
        self.post(life, [cost] * len(life.instances), 0)
        self.use(life, [cost, 1, *tokens, 0])
        self.unknown[(life.project, life.rid)] = cost
        life.state, life.cost = "S", cost

    # -- what the store must say -------------------------------------------------------------

    def cap(self, inst: Instance) -> int:
        project, budget, _ = inst
        return next(s.cap for s in self.specs(project) if s.id == budget)

    def usage_rows(self, project: str) -> dict[tuple[str, ...], tuple[int, ...]]:
        """Attribution as ``usage()`` reports it: total, per model, per tag value, and per tag
        key the requests without it (``""``) when that row is not all zero."""
        rows: dict[tuple[str, ...], Row] = {}

        def add(dim: tuple[str, ...], row: Row) -> None:
            current = rows.setdefault(dim, [0] * 7)
            for i, v in enumerate(row):
                current[i] += v

        mine = [b for b in self.bookings if b[0] == project]
        keys = {k for _, _, tags, _ in mine for k in tags}
        for _, model, tags, row in mine:
            add(("total",), row)
            add(("model", model), row)
            for k in keys:
                add(("tag", k, tags.get(k, "")), row)
        return {
            dim: tuple(row)
            for dim, row in rows.items()
            if not (dim[0] == "tag" and dim[2] == "" and not any(row))
        }


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
            seen.expired[e.rid] = (_nano(e.amount_usd), e.reason, e.budget)
        elif isinstance(e, audit.SettleOverEstimate):
            seen.over[e.rid] += 1
            life = self.m.lives[(project, e.rid)]
            if (_nano(e.amount_usd), _nano(e.hold_usd)) != (life.cost, life.hold):
                self.fail(f"{project}: {e} does not match cost {life.cost}, hold {life.hold}")
        elif isinstance(e, audit.SettleLate):
            self.once(project, e.event, e.rid, seen.late)
            seen.late[e.rid] = (e.reason, _nano(e.amount_usd), _nano(e.correction_usd))
        elif isinstance(e, audit.SettleUnknown):
            self.once(project, e.event, e.rid, seen.unknown)
            seen.unknown[e.rid] = _nano(e.amount_usd)
        elif isinstance(e, audit.BudgetWarn):
            seen.warns[(e.budget, e.split or "", e.threshold)] += 1
            if _nano(e.spent_usd) < math.ceil(_nano(e.cap_usd) * e.threshold):
                self.fail(f"{project}: {e} fired below its threshold")
        elif isinstance(e, audit.PolicyApplied):
            seen.applied += 1
        else:
            self.fail(f"{project}: an entry the history does not explain: {e}")

    def identity(self, e: Any) -> tuple[str, ...]:
        tags = _tags_key(e.tags)
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
