"""The demo: worker processes run a day of traffic in seconds against one project's limits.

A normal feature settles what it used, a runaway agent retries into its rate limit, a heavy
customer runs over its daily split budget until someone approves an override, and some
requests ask for a denied model (the scenario is in ``cli/_demo_scenario.py``).

It runs against ``--url`` when given, else ``PRISM_REDIS_URL`` when set, else a private
``redis-server`` from PATH that it starts on a free port (and stops, unless ``--keep``), else
the embedded ``memory://`` store with threads instead of processes. It never assumes a Redis on
localhost:6379, and it says which one it uses.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from rich.console import Console
from rich.text import Text

from prism_limiter.cli._common import out, usd
from prism_limiter.cli._demo_report import Progress, Tally, progress, report
from prism_limiter.cli._demo_scenario import (
    CALL,
    HEAVY,
    MODEL,
    POLICY,
    PROJECT,
    RATE,
    Outcome,
    Sync,
    features_of,
    work,
    work_process,
)
from prism_limiter.engine._devserver import free_port, redis_server, redis_server_binary
from prism_limiter.engine._limiter import Limiter
from prism_limiter.engine._records import Override
from prism_limiter.policy._policy import Policy

SECONDS = 12.0
REQUESTER = "support@example.com"  # asks for the override
APPROVER = "oncall@example.com"  # approves it


def _approve(lim: Limiter, customer: str) -> Override:
    """The on-call engineer doubles ``customer``'s budget for today: the demo's one grant."""
    return lim.grant_override(
        PROJECT,
        "per-customer",
        usd=0.01,
        ttl_s=3600,
        requested_by=REQUESTER,
        approved_by=APPROVER,
        reason=f"{customer} is onboarding a team today",
        split_value=customer,
    )


def _shown(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _kept_server() -> tuple[str, str]:
    """A private redis-server that outlives the demo (``--keep``): its URL and how to stop it."""
    binary = redis_server_binary()
    assert binary is not None
    home = Path(tempfile.mkdtemp(prefix="prism-demo-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(home), "--save", ""]
    args += ["--appendonly", "no", "--logfile", str(home / "redis.log")]
    args += ["--daemonize", "yes", "--pidfile", str(home / "redis.pid")]
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL, timeout=10)
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {home}/redis.log)") from None
            time.sleep(0.02)
    client.close()
    return url, f"redis-cli -u {url} shutdown nosave && rm -r {home}"


def _choose(url: str | None, stack: ExitStack, keep: bool) -> tuple[str, str, str | None]:
    """The URL to run on, what it is, and how a shell names it afterwards (None when the
    store is gone once the demo ends)."""
    if url is not None:
        return url, f"the given URL {_shown(url)}", f"'{_shown(url)}'"
    env = os.environ.get("PRISM_REDIS_URL")
    if env:
        return env, f"PRISM_REDIS_URL ({_shown(env)})", '"$PRISM_REDIS_URL"'
    if redis_server_binary() and keep:
        kept, stop = _kept_server()
        stack.callback(print, f"\nthe redis-server keeps running; stop it with:  {stop}")
        return kept, f"a private redis-server at {kept}, kept running (--keep)", f"'{kept}'"
    if redis_server_binary():
        started = stack.enter_context(redis_server())
        return started, f"a private redis-server at {started}, stopped when the demo ends", None
    return (
        "memory://demo",
        "the embedded memory:// store (no PRISM_REDIS_URL, no redis-server on PATH): "
        "threads instead of processes",
        None,
    )


def _afresh(lim: Limiter) -> int:
    """Delete what an earlier run left in the demo project (spend, holds, overrides, audit),
    then apply its policy; the policy version."""
    for key in list(lim.client.scan_iter(match=f"{lim.namespace}:{{{PROJECT}}}:*", count=1000)):
        lim.client.delete(key)
    return lim.apply_policy(Policy.from_toml(POLICY), actor="demo").version


class _Run:
    """The main process's side: start the workers together, show progress, approve the
    override when the heavy customer is first blocked, stop them when the time is up."""

    def __init__(self, console: Console, lim: Limiter, url: str, workers: int) -> None:
        self.console, self.lim, self.workers = console, lim, workers
        self.tally = Tally()
        self.errors: list[str] = []
        self.seen: set[tuple[str, str]] = set()
        self.embedded = url.startswith("memory://")
        plans = [(url, w, features_of(w, workers)) for w in range(workers)]
        if self.embedded:
            self.sync = Sync(
                threading.Barrier(workers + 1), threading.Event(), queue_module.Queue()
            )
            self.runners: list[Any] = [
                threading.Thread(target=work, args=(*p, self.sync)) for p in plans
            ]
        else:
            ctx = mp.get_context("spawn")
            self.sync = Sync(ctx.Barrier(workers + 1), ctx.Event(), ctx.Queue())
            self.runners = [ctx.Process(target=work_process, args=(*p, self.sync)) for p in plans]

    def __call__(self, seconds: float) -> None:
        try:
            for r in self.runners:
                r.start()
            try:
                self.sync.ready.wait(timeout=120)
                kind = "threads" if self.embedded else "processes"
                self.console.print(
                    Text(f"{self.workers} worker {kind} ready; the clock runs for {seconds:g} s")
                )
            except threading.BrokenBarrierError:
                self.sync.stop.set()  # a worker could not start: collect what it says
            self._collect(seconds)
        finally:
            self.sync.stop.set()
            self.sync.ready.abort()  # a worker still waiting to start gives up
            for r in self.runners:
                if r.ident is not None:
                    r.join(30)

    def _collect(self, seconds: float) -> None:
        done: set[int] = set()
        start = shown = time.monotonic()
        with progress(self.console) as view:
            while len(done) < self.workers:
                elapsed = time.monotonic() - start
                if elapsed >= seconds:
                    self.sync.stop.set()
                try:
                    worker, feature, outcome = self.sync.events.get(timeout=0.05)
                except queue_module.Empty:
                    if self.sync.stop.is_set() and not any(r.is_alive() for r in self.runners):
                        break  # a worker died without a word
                else:
                    if feature is None:
                        done.add(worker)
                        if outcome:
                            self.errors.append(f"worker {worker} failed: {outcome}")
                    else:
                        self.tally.add(worker, feature, outcome)
                        self._first(view, elapsed, feature, outcome)
                if time.monotonic() - shown >= 0.25:
                    shown = time.monotonic()
                    view.update(self.tally, min(elapsed, seconds), seconds)
            view.update(self.tally, seconds, seconds)

    def _first(self, view: Progress, elapsed: float, feature: str, outcome: Outcome) -> None:
        """Say when each limit first denies; approve the override when the heavy customer is
        first blocked."""
        if outcome.kind == CALL or (outcome.kind, outcome.detail) in self.seen:
            return
        self.seen.add((outcome.kind, outcome.detail))
        if outcome.kind == RATE:
            wait = outcome.retry_after_s
            then = f"retries in {wait:.2f} s" if wait is not None else "retries"
            view.event(elapsed, f"{feature}: rate limited by {outcome.detail}; it {then}")
        elif outcome.kind == MODEL:
            view.event(elapsed, f"{feature}: model denied, {outcome.detail}")
        else:
            view.event(elapsed, f"{feature}: blocked by {outcome.detail}")
            if outcome.detail == f"per-customer [{HEAVY}]":
                o = _approve(self.lim, HEAVY)
                view.event(
                    elapsed,
                    f"{APPROVER} approves {REQUESTER}'s override for {HEAVY}:"
                    f" +{usd(o.extra_usd, 4)} until {o.expires_at:%H:%M} UTC",
                )


def run(url: str | None, workers: int, seconds: float = SECONDS, keep: bool = False) -> int:
    """Run the demo on ``url``, else ``PRISM_REDIS_URL``, else a private redis-server from
    PATH, else the embedded store; 0 when every worker made calls and every budget stayed
    within its cap."""
    console = out()
    with ExitStack() as stack:
        url, what, shell_url = _choose(url, stack, keep)
        console.print(Text(f"using {what}"))
        if keep and urlsplit(url).scheme == "memory":
            console.print(Text("(--keep: nothing to keep, the memory:// store ends with the demo)"))
        lim = stack.enter_context(Limiter.from_url(url))
        version = _afresh(lim)
        console.print(Text(f"project {PROJECT} started afresh; policy version {version} applied"))
        driven = _Run(console, lim, url, workers)
        driven(seconds)
        within = report(console, lim, driven.tally)
        idle = [w for w in range(workers) if driven.tally.calls_of(w) == 0]
        for problem in driven.errors + [f"worker {w} made no calls" for w in idle]:
            console.print(Text(problem, style="bold red"))
        if shell_url is not None and urlsplit(url).scheme in ("redis", "rediss"):
            key = lim.audit_key(PROJECT)
            flag = "" if shell_url.startswith('"') else f" --url {shell_url}"
            console.print()
            console.print(
                Text(f"read the audit trail with:  redis-cli -u {shell_url} XRANGE '{key}' - +")
            )
            console.print(
                Text(f"follow it with:  prism-limiter audit tail {PROJECT} --follow{flag}")
            )
    return 0 if within and not driven.errors and not idle else 1
