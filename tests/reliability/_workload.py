"""The history checker's workload: the policy, and workers that log every operation they issue.

One hot project (a small budget every worker contends for, a concurrency limit) and a few cold
ones (budgets per project, per customer and per feature, a per-customer concurrency limit).
Each worker thread reserves, settles (exactly, under, over, with cache reads and writes, from
the reservation or by id), releases, leaves a ``with`` block with or without an exception,
repeats calls with the same id, lets some leases run out, settles some after their lease,
books ids nobody reserved and sweeps. Every call's outcome is written as one JSON line of its
process's log after the reply came back: the log is the history of acknowledged operations that
``_replay`` checks the store against.

Prices are negotiated in the policy (``PRICES``), so the replay computes every hold and cost in
integer pico- and nano-dollars on its own.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

from prism_limiter import InvalidRequest, Limiter, LimitExceeded, Reservation, Settlement

HOT = "hot"
COLD = ("cold-a", "cold-b", "cold-c")
BANNED = "hist-banned"  # denied by the hot project's deny list, not allowed by the cold ones
CUSTOMERS = tuple(f"c{i}" for i in range(6))
TEAMS = ("t1", "t2", "t3")
SHORT_TTL_S = (0.2, 0.5)  # leases left to run out, or settled after they may have
HOT_CAP = 10_000_000  # nUSD: about a dozen holds, for sixteen workers holding up to three each
HOT_SLOTS = 8
OPEN_PER_THREAD = 3


@dataclass(frozen=True)
class Price:
    """Pico-dollars per token of each class (``None``: billed as plain input)."""

    input: int
    output: int
    cache_read: int | None = None
    cache_write: int | None = None

    def cost(self, t_in: int, t_out: int, t_cr: int = 0, t_cw: int = 0) -> int:
        """nUSD, rounded up, as the README prices a settle."""
        cr = t_cr if self.cache_read is not None else 0
        cw = t_cw if self.cache_write is not None else 0
        pico = (t_in - cr - cw) * self.input + t_out * self.output
        pico += cr * (self.cache_read or 0) + cw * (self.cache_write or 0)
        return -(-pico // 1000)

    def hold(self, est: int, out: int) -> int:
        """nUSD held at reserve: every input token at the dearest input class."""
        dearest = max(self.input, self.cache_read or 0, self.cache_write or 0)
        return -(-(est * dearest + out * self.output) // 1000)

    def toml(self) -> str:
        def mtok(pico: int) -> str:
            return str(Decimal(pico) / 10**6)

        lines = [f"input_mtok = {mtok(self.input)}", f"output_mtok = {mtok(self.output)}"]
        if self.cache_read is not None:
            lines.append(f"cache_read_mtok = {mtok(self.cache_read)}")
        if self.cache_write is not None:
            lines.append(f"cache_write_mtok = {mtok(self.cache_write)}")
        return "\n".join(lines)


PRICES = {
    # 123.4 and 432.1 nUSD a token: most costs round up to the next nano-dollar.
    "hist-small": Price(123_400, 432_100),
    # A cache write dearer than input: the hold prices every input token as a write.
    "hist-cached": Price(1_000_000, 4_000_000, cache_read=100_000, cache_write=1_250_000),
}


@dataclass(frozen=True)
class BudgetSpec:
    id: str
    cap: int  # nUSD
    warn_at: tuple[float, ...] = ()
    on_expiry: str = "charge"
    split_by: str | None = None
    where: tuple[tuple[str, str], ...] = ()
    models: tuple[str, ...] = ()

    def instance(self, model: str, tags: dict[str, str]) -> tuple[str, str | None] | None:
        """(budget id, split value) of the instance a request counts against, or None."""
        if any(tags.get(k) != v for k, v in self.where):
            return None
        if self.models and not any(fnmatchcase(model, g) for g in self.models):
            return None
        if self.split_by is not None and self.split_by in tags:
            return self.id, tags[self.split_by]
        return self.id, None

    def toml(self, project: str) -> str:
        lines = [
            f"[[projects.{project}.budgets]]",
            f'id = "{self.id}"',
            f"usd = {Decimal(self.cap) / 10**9}",
            'period = "total"',
            f"warn_at = {list(self.warn_at)}",
            f'on_expiry = "{self.on_expiry}"',
        ]
        if self.split_by:
            lines.append(f'split_by = "{self.split_by}"')
        if self.where:
            lines.append("where = {" + ", ".join(f'{k} = "{v}"' for k, v in self.where) + "}")
        if self.models:
            lines.append(f"models = {json.dumps(list(self.models))}")
        return "\n".join(lines)


def hot_budgets(cap: int) -> tuple[BudgetSpec, ...]:
    return (BudgetSpec("pool", cap, warn_at=(0.5, 0.9)),)


def cold_budgets(scale: int) -> tuple[BudgetSpec, ...]:
    """Caps that leave the project total cold, fill some customers' budgets late in the run."""
    return (
        BudgetSpec("all", 2_000_000_000 * scale, warn_at=(0.05, 0.2)),
        BudgetSpec(
            "per-customer",
            80_000_000 * scale,
            warn_at=(0.8,),
            on_expiry="release",
            split_by="customer",
        ),
        BudgetSpec(
            "chat",
            500_000_000 * scale,
            warn_at=(0.5,),
            where=(("feature", "chat"),),
            models=("hist-small",),
        ),
    )


def budgets_of(project: str, hot_cap: int, scale: int) -> tuple[BudgetSpec, ...]:
    return hot_budgets(hot_cap) if project == HOT else cold_budgets(scale)


def _prices(project: str) -> str:
    return "\n".join(
        f'[projects.{project}.prices."{model}"]\n{price.toml()}' for model, price in PRICES.items()
    )


def hot_policy(cap: int) -> str:
    budgets = "\n".join(b.toml(HOT) for b in hot_budgets(cap))
    return f"""
[projects.{HOT}]
allow_models = ["hist-*"]
deny_models = ["{BANNED}"]
default_max_output_tokens = 800
{_prices(HOT)}
{budgets}
[[projects.{HOT}.rate_limits]]
id = "slots"
max_concurrent = {HOT_SLOTS}
"""


def cold_policy(project: str, scale: int) -> str:
    budgets = "\n".join(b.toml(project) for b in cold_budgets(scale))
    return f"""
[projects.{project}]
allow_models = ["hist-small", "hist-cached"]
default_max_output_tokens = 300
{_prices(project)}
{budgets}
[[projects.{project}.rate_limits]]
id = "cust-slots"
max_concurrent = 2
split_by = "customer"
where = {{ feature = "search" }}
"""


def policy(hot_cap: int, scale: int) -> str:
    return hot_policy(hot_cap) + "".join(cold_policy(p, scale) for p in COLD)


@dataclass(frozen=True)
class Sizes:
    """How much load: each thread issues at least ``steps`` operations, for at least
    ``seconds``; the cold caps grow with ``scale`` so that a long run does not only hit them."""

    processes: int
    threads: int
    steps: int
    seconds: float = 0.0
    scale: int = 1
    retention_s: int = 7 * 86400  # how long ended hold records are kept (a soak drops them)
    seed: int = 1


class Log:
    """One process's history: a JSON line per acknowledged operation, threads interleaved."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, **record: Any) -> None:
        record["t_ms"] = time.time_ns() // 10**6  # when the reply came (for reading a failure)
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        self._file.close()


def nano(usd: float) -> int:
    return round(usd * 1e9)


class _Boom(Exception):
    """What a caller's code raises inside the ``with`` block."""


@dataclass
class _Open:
    r: Reservation
    project: str
    model: str
    tags: dict[str, str]
    est: int
    out: int
    due: float = 0.0  # stale ones: when (monotonic) the lease has surely run out


@dataclass
class Worker:
    """One thread's loop: a few reservations open at a time, every outcome logged."""

    lim: Limiter
    log: Log
    name: str
    rng: random.Random
    n: int = 0
    open: list[_Open] = field(default_factory=list)
    stale: list[_Open] = field(default_factory=list)
    denied: list[tuple[str, str]] = field(default_factory=list)

    def run(self, steps: int, until: float) -> None:
        done = 0
        while done < steps or time.monotonic() < until:
            self.step()
            done += 1
        for o in self.open + self.stale:
            self.end(o)

    def step(self) -> None:
        now = time.monotonic()
        for o in [o for o in self.stale if o.due <= now]:
            self.stale.remove(o)
            self.end(o)
        rng = self.rng
        if len(self.open) < OPEN_PER_THREAD and (not self.open or rng.random() < 0.55):
            self.reserve_new()
        else:
            self.end(self.open.pop(rng.randrange(len(self.open))))
        x = rng.random()
        if x < 0.002:
            project = rng.choice((HOT, *COLD))
            self.log(op="sweep", p=project, expired=self.lim.sweep(project))
        elif x < 0.012:
            self.settle_unknown()
        elif x < 0.016 and self.denied:
            self.end_denied(*self.denied.pop(rng.randrange(len(self.denied))))

    # -- reserve -----------------------------------------------------------------------------

    def reserve_new(self) -> None:
        rng = self.rng
        self.n += 1
        rid = f"{self.name}.{self.n}"
        project = HOT if rng.random() < 0.5 else rng.choice(COLD)
        m = rng.random()
        model = "hist-small" if m < 0.6 else ("hist-cached" if m < 0.96 else BANNED)
        if project == HOT:
            tags = {"team": rng.choice(TEAMS)} if rng.random() < 0.8 else {}
        else:
            tags = {"feature": rng.choice(("chat", "search"))}
            if rng.random() < 0.9:
                tags["customer"] = rng.choice(CUSTOMERS)
        if model == "hist-cached":
            est, out = rng.randint(200, 600), rng.randint(100, 300)
        else:
            est, out = rng.randint(2000, 6000), rng.randint(400, 1200)
        kind = rng.random()
        if project == HOT:
            kind *= 5  # fewer expired holds on the hot budget: each one charges its hold
        ttl = rng.uniform(*SHORT_TTL_S) if kind < 0.05 else None
        args = (project, model, est, out, tags, ttl, rid)
        r = self.reserve(*args)
        if r is not None and r.allowed and rng.random() < 0.05:
            self.reserve(*args)  # a retry: the same hold, replayed
        elif r is not None and not r.allowed and rng.random() < 0.2:
            r = self.reserve(*args)  # a denied id is decided afresh
        if r is None or not r.allowed:
            self.denied = [*self.denied[-19:], (project, rid)]  # recent ones: their records
            return
        o = _Open(r, project, model, tags, est, out)
        if kind < 0.02:
            return  # abandoned: its lease runs out
        if kind < 0.05:
            o.due = time.monotonic() + (ttl or 0) + 0.05
            self.stale.append(o)  # settled or released once its lease may have run out
            return
        self.open.append(o)

    def reserve(
        self,
        project: str,
        model: str,
        est: int,
        out: int,
        tags: dict[str, str],
        ttl: float | None,
        rid: str,
    ) -> Reservation | None:
        record = {"p": project, "rid": rid, "m": model, "tags": tags, "est": est, "out": out}
        kwargs: dict[str, Any] = {
            "est_tokens": est,
            "max_output_tokens": out,
            "tags": tags,
            "ttl_s": ttl,
            "reservation_id": rid,
        }
        r: Reservation | None = None
        try:
            if self.rng.random() < 0.2:  # the raising form
                try:
                    r = self.lim.reserve(project, model, **kwargs)
                    d = r.decision
                except LimitExceeded as exc:
                    d = exc.decision
            else:
                r = self.lim.try_reserve(project, model, **kwargs)
                d = r.decision
        except InvalidRequest:
            self.log(op="reserve", **record, ttl=ttl, ended=True)  # the id's hold had ended
            return None
        self.log(
            op="reserve",
            **record,
            ttl=ttl,
            ok=d.allowed,
            hold=nano(d.hold_usd),
            why=d.reason,
            budget=d.budget,
            split=d.split_value,
            limit=d.limit,
            kind=d.limit_kind,
            replayed=d.replayed,
        )
        return r

    # -- the end of a reservation ------------------------------------------------------------

    def usage(self, o: _Open) -> dict[str, int]:
        """Token counts for a settle; on the hot project always within the hold."""
        rng, est, out = self.rng, o.est, o.out
        shapes: tuple[str, ...] = ("tiny", "zero", "exact", "cache")
        weights: tuple[int, ...] = (84, 10, 3, 3) if o.project == HOT else (15, 5, 20, 20)
        if o.project != HOT:
            shapes += ("under", "over")
            weights += (25, 15)
        shape = rng.choices(shapes, weights)[0]
        if shape == "tiny":
            return {"input_tokens": rng.randint(0, 20), "output_tokens": rng.randint(0, 2)}
        if shape == "zero":
            return {"input_tokens": 0, "output_tokens": 0}
        if shape == "exact":
            return {"input_tokens": est, "output_tokens": out}
        if shape == "cache":
            return {
                "input_tokens": est,
                "output_tokens": out // 2,
                "cache_read_tokens": est // 4,
                "cache_write_tokens": est // 2,
            }
        if shape == "under":
            return {"input_tokens": est // 2, "output_tokens": out // 3}
        return {"input_tokens": 2 * est + 10, "output_tokens": out + 50}  # over the hold

    def settle(self, o: _Open, via: str) -> None:
        counts: dict[str, Any] = self.usage(o)
        rid = o.r.id
        s = o.r.settle(**counts) if via == "r" else self.lim.settle(o.project, rid, **counts)
        self.log_settle(s, p=o.project, rid=rid, via=via, **counts)

    def log_settle(self, s: Settlement, **record: Any) -> None:
        self.log(
            op="settle",
            **record,
            cost=nano(s.cost_usd),
            hold=nano(s.hold_usd),
            first=s.first,
            late=s.late,
            over=s.over_estimate,
            unknown=s.unknown,
        )

    def release(self, o: _Open, via: str) -> None:
        if via == "boom":
            try:
                with o.r:
                    raise _Boom
            except _Boom:
                pass
            released = None  # the block released it, if it was still held
        elif via == "r":
            released = o.r.release()
        else:
            released = self.lim.release(o.project, o.r.id)
        self.log(op="release", p=o.project, rid=o.r.id, via=via, released=released)

    def end(self, o: _Open) -> None:
        rng = self.rng
        a = rng.random()
        if o.due:  # its lease may have run out: only calls whose reply says what happened
            a *= 0.80
        cold = o.project != HOT
        estimate = 0.88 if cold else 0.96  # a charged estimate books its whole hold
        if a < 0.55:
            self.settle(o, "r" if a < 0.40 else "lim")
            if rng.random() < 0.1:
                self.settle(o, "lim")  # a repeat: the first result, nothing booked
            if rng.random() < 0.05:
                self.release(o, "lim")  # too late: already settled
        elif a < estimate:
            self.release(o, "r" if a < 0.72 else ("lim" if a < 0.80 else "boom"))
            if rng.random() < 0.1:
                self.release(o, "lim")
            if cold and rng.random() < 0.15:
                self.settle(o, "lim")  # after the release: a correction, booked once
        else:
            with o.r:
                pass  # left without a settle: charged the estimate
            self.log(op="estimate", p=o.project, rid=o.r.id)
            if rng.random() < 0.5:
                self.settle(o, "lim")  # the real usage arrives later: the difference, once
        if rng.random() < 0.03:
            self.reserve(o.project, o.model, o.est, o.out, o.tags, None, o.r.id)  # spent id

    def settle_unknown(self) -> None:
        """A settle of an id no reserve took (a degraded worker's, say), booked by id."""
        rng = self.rng
        self.n += 1
        project, rid = rng.choice(COLD), f"{self.name}.{self.n}"
        model = rng.choice(tuple(PRICES))
        tags = {"feature": rng.choice(("chat", "search")), "customer": rng.choice(CUSTOMERS)}
        counts = {"input_tokens": rng.randint(0, 800), "output_tokens": rng.randint(0, 200)}
        for _ in range(1 + (rng.random() < 0.2)):  # sometimes repeated: booked once
            s = self.lim.settle(project, rid, model=model, tags=tags, **counts)
            self.log_settle(s, p=project, rid=rid, via="unknown", m=model, tags=tags, **counts)

    def end_denied(self, project: str, rid: str) -> None:
        """Settling or releasing a denied id is refused and changes nothing."""
        what = self.rng.choice(("settle", "release"))
        try:
            if what == "settle":
                self.lim.settle(project, rid, input_tokens=1, output_tokens=1)
            else:
                self.lim.release(project, rid)
        except InvalidRequest:
            self.log(op="refused", p=project, rid=rid, what=what)
        else:
            self.log(op="error", what=f"{what} of denied {rid} was not refused")


def run_process(url: str, log_path: str, index: int, sizes: Sizes, go: Any) -> None:
    """A worker process: ``sizes.threads`` workers on one limiter, started by ``go``."""
    import structlog

    # The estimate charges log a warning each: keep the workers' output readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    lim = Limiter.from_url(url, socket_timeout=10, record_retention_s=sizes.retention_s)
    log = Log(Path(log_path))
    go.wait()
    until = time.monotonic() + sizes.seconds

    def thread(t: int) -> None:
        rng = random.Random(f"{sizes.seed}.{index}.{t}")
        worker = Worker(lim, log, f"w{index}.{t}", rng)
        try:
            worker.run(sizes.steps, until)
        except BaseException as exc:  # a finding: the checker reports it
            log(op="error", what=f"{worker.name}: {exc!r}")

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(sizes.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lim.close()
