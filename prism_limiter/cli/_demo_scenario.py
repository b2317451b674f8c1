"""The demo's scenario: its policy, the four features its workers run, and a worker's loop.

- ``autocomplete``: the normal feature, steady traffic that settles what it really used;
- ``chat``: a split budget per customer, and one customer (``acme``) much heavier than the rest;
- ``agent``: a runaway agent in a retry loop against its rate limit (it waits ``retry_after_s``);
- ``summarize``: some requests ask for a model the policy denies.

A worker runs one feature or several (fewer workers than features: each takes more than one, in
turns), reports every attempt on a queue, and starts only when every worker is ready.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from prism_limiter.engine._limiter import Limiter
from prism_limiter.errors import BudgetExceeded, ModelNotAllowed, RateLimited

PROJECT = "demo"
HEAVY = "acme"  # the customer who runs over its daily split budget
CUSTOMERS = ("globex", "initech", "hooli")
DENIED_MODEL = "claude-3-opus-latest"
FEATURES = ("autocomplete", "chat", "agent", "summarize")

POLICY = f"""
[projects.{PROJECT}]
allow_models = ["gpt-4o-mini", "claude-3-5-haiku-*"]
deny_models  = ["*opus*"]
default_max_output_tokens = 400

[[projects.{PROJECT}.budgets]]
id = "daily"
usd = 0.50
period = "day"
warn_at = [0.25, 0.5]

[[projects.{PROJECT}.budgets]]
id = "per-customer"
usd = 0.01
period = "day"
split_by = "customer"
where = {{ feature = "chat" }}

[[projects.{PROJECT}.rate_limits]]
id = "agent-rpm"
rpm = 120
burst = 0.05
where = {{ feature = "agent" }}
"""

# Outcomes of one attempt: an LLM call made (and settled), or the kind of denial.
CALL, RATE, BUDGET, MODEL = "call", "rate", "budget", "model"


class Outcome(NamedTuple):
    kind: str
    cost_usd: float = 0.0
    detail: str = ""  # the limit, the budget instance or the model that denied it
    retry_after_s: float | None = None


def features_of(worker: int, workers: int) -> tuple[str, ...]:
    """Feature ``i`` runs on worker ``i % workers``; a worker beyond the features repeats one."""
    slots = range(max(workers, len(FEATURES)))
    return tuple(FEATURES[i % len(FEATURES)] for i in slots if i % workers == worker)


def attempt(
    lim: Limiter, rng: random.Random, model: str, tags: dict[str, str], *, est: int, max_out: int
) -> Outcome:
    """Reserve, "call the LLM", settle the tokens it really used."""
    try:
        with lim.reserve(PROJECT, model, est_tokens=est, max_output_tokens=max_out, tags=tags) as r:
            time.sleep(rng.uniform(0.02, 0.06))  # the call itself
            used = rng.randint(est * 3 // 5, est)
            s = r.settle(
                input_tokens=used,
                output_tokens=rng.randint(max_out // 4, max_out),
                cache_read_tokens=used // 3,
            )
    except RateLimited as exc:
        d = exc.decision
        return Outcome(RATE, detail=f"{d.limit} ({d.limit_kind})", retry_after_s=d.retry_after_s)
    except BudgetExceeded as exc:
        d = exc.decision
        split = f" [{d.split_value}]" if d.split_value else ""
        return Outcome(BUDGET, detail=f"{d.budget}{split}")
    except ModelNotAllowed as exc:
        return Outcome(MODEL, detail=f"{exc.decision.model} ({exc.decision.reason})")
    return Outcome(CALL, s.cost_usd)


class Feature:
    """One feature's traffic: ``step`` makes one attempt and says when the next one is due."""

    def __init__(self, name: str, seed: str) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.turns = 0

    def step(self, lim: Limiter) -> tuple[Outcome, float]:
        rng, self.turns = self.rng, self.turns + 1
        tags = {"feature": self.name, "customer": rng.choice(CUSTOMERS)}
        if self.name == "autocomplete":  # steady and small
            got = attempt(lim, rng, "gpt-4o-mini", tags, est=rng.randint(200, 800), max_out=60)
            return got, 0.08
        if self.name == "chat":  # acme sends four requests in five
            if rng.random() < 0.8:
                tags["customer"] = HEAVY
            got = attempt(lim, rng, "gpt-4o-mini", tags, est=rng.randint(2000, 4000), max_out=300)
            return got, 0.25 if got.kind == BUDGET else 0.05
        if self.name == "agent":  # no pause between steps; its context grows with each one
            est = min(2000 + 100 * self.turns, 8000)
            got = attempt(lim, rng, "gpt-4o-mini", tags, est=est, max_out=500)
            if got.kind == RATE:
                return got, got.retry_after_s if got.retry_after_s is not None else 1.0
            return got, 0.0
        # summarize: one request in five asks for the premium model the policy denies
        model = DENIED_MODEL if rng.random() < 0.2 else "claude-3-5-haiku-latest"
        got = attempt(lim, rng, model, tags, est=rng.randint(2000, 5000), max_out=300)
        return got, 0.15


@dataclass(frozen=True)
class Sync:
    """What the main process and the workers share: ``ready`` (a barrier for every worker
    and the main process), ``stop`` (an event) and ``events`` (the queue of attempts)."""

    ready: Any
    stop: Any
    events: Any


def work(url: str, worker: int, features: tuple[str, ...], sync: Sync) -> None:
    """One worker: get ready, wait for every other one, then run its features in turns until
    ``stop``. Puts ``(worker, feature, Outcome)`` per attempt, then ``(worker, None, error)``."""
    error = ""
    try:
        lim = Limiter.from_url(url)
        try:
            lim.status(PROJECT)  # connected and the scripts loaded before the clock runs
            mine = [Feature(f, seed=f"{f}:{worker}") for f in features]
            due = [0.0 for _ in mine]
            sync.ready.wait(timeout=120)
            start = time.monotonic()
            while not sync.stop.is_set():
                i = min(range(len(mine)), key=due.__getitem__)
                wait = start + due[i] - time.monotonic()
                if wait > 0:
                    sync.stop.wait(wait)
                    continue
                outcome, pause = mine[i].step(lim)
                sync.events.put((worker, mine[i].name, outcome))
                due[i] = time.monotonic() - start + pause
        finally:
            lim.close()
    except Exception as exc:  # reported by the main process, which then exits 1
        error = f"{type(exc).__name__}: {exc}"
        sync.ready.abort()
    sync.events.put((worker, None, error))


def work_process(url: str, worker: int, features: tuple[str, ...], sync: Sync) -> None:
    """``work`` in a process of its own: the library's log lines (warnings and up) on stderr,
    as the command line sends them, so that stdout holds only the demo's output; Ctrl-C stops
    the main process, which stops the workers."""
    import structlog  # noqa: PLC0415 - only the worker processes need it

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(30),
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    work(url, worker, features, sync)
