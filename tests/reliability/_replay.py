"""The history checker's replay: what the store must hold, rebuilt from the logged history alone.

``Model`` replays the acknowledged operations of every worker's log (``_workload``) with the
rules the README documents, in integer nano-dollars: a hold is its estimate at the dearest input
price, a settle books its cost once (the difference to what an expiry or an estimate booked, for
a late one), an expiry charges or releases per budget, a charged estimate books the hold, and
each of these writes the audit entries it must. Each reservation id lives in one worker thread,
so its operations come in log order. What the replies said is checked against the rules on the
way (``problems``); ``_check`` then compares the model with the store through the public API.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from _workload import PRICES, BudgetSpec, budgets_of

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


def dnano(amount: Decimal) -> int:
    """An exact decimal USD amount of the audit trail, as nano-dollars."""
    value = amount * 10**9
    assert value == value.to_integral_value(), amount
    return int(value)


def tags_key(tags: dict[str, str]) -> str:
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
        why, model, tags = rec["why"], life.model, tags_key(life.tags)
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
