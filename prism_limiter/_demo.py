"""The demo: several worker processes share one budget until it blocks.

It runs against ``--url`` when given, else ``PRISM_REDIS_URL`` when set, else a private
``redis-server`` from PATH that it starts on a free port (and stops), else the embedded
``memory://`` store with threads instead of processes. It never assumes a Redis on
localhost:6379, and it says which one it uses.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import random
import threading
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prism_limiter._devserver import redis_server, redis_server_binary
from prism_limiter._limiter import Limiter
from prism_limiter._policy import Policy
from prism_limiter.errors import BudgetExceeded

POLICY = """
[projects.search]
allow_models = ["gpt-4o-mini", "claude-haiku-*"]
deny_models  = ["*opus*"]
default_max_output_tokens = 400

[[projects.search.budgets]]
id = "daily"
usd = 0.05
period = "day"
timezone = "UTC"
warn_at = [0.5, 0.8]

[[projects.search.budgets]]
id = "per-customer"
usd = 0.02
period = "day"
split_by = "customer"
where = { feature = "chat" }
"""


def _work(url: str, worker: int, out: Any) -> None:
    """One worker: reserve, "call the LLM", settle the real usage; stop when denied."""
    lim = Limiter.from_url(url)
    rng = random.Random(worker)
    done, spent = 0, 0.0
    while True:
        est = rng.randint(500, 2500)
        tags = {"feature": rng.choice(["chat", "search"]), "customer": f"org:{rng.randint(1, 3)}"}
        try:
            with lim.reserve("search", "gpt-4o-mini", est_tokens=est, tags=tags) as r:
                used = rng.randint(est // 2, est)
                s = r.settle(
                    input_tokens=used,
                    output_tokens=rng.randint(50, 400),
                    cache_read_tokens=used // 4,
                )
        except BudgetExceeded as exc:
            d = exc.decision
            out.put((worker, done, spent, f"{d.budget} ({d.split_value or 'all'})"))
            return
        done += 1
        spent += s.cost_usd


def _shown(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _choose(url: str | None, stack: ExitStack) -> tuple[str, str, str | None]:
    """The URL to run on, what it is, and how a shell names it afterwards (None when the
    store is gone once the demo ends)."""
    if url is not None:
        return url, f"the given URL {_shown(url)}", f"'{_shown(url)}'"
    env = os.environ.get("PRISM_REDIS_URL")
    if env:
        return env, f"PRISM_REDIS_URL ({_shown(env)})", '"$PRISM_REDIS_URL"'
    if redis_server_binary():
        started = stack.enter_context(redis_server())
        return started, f"a private redis-server at {started}, stopped when the demo ends", None
    return (
        "memory://demo",
        "the embedded memory:// store (no PRISM_REDIS_URL, no redis-server on PATH): "
        "threads instead of processes",
        None,
    )


def run(url: str | None, workers: int) -> int:
    """Run the demo on ``url``, else ``PRISM_REDIS_URL``, else a private redis-server from
    PATH, else the embedded store; 0 when every budget stayed within its cap."""
    with ExitStack() as stack:
        url, what, shell_url = _choose(url, stack)
        print(f"using {what}")
        lim = Limiter.from_url(url)
        version = lim.apply_policy(Policy.from_toml(POLICY), actor="demo").version
        print(f"policy version {version} applied\n")
        embedded = url.startswith("memory://")
        if embedded:
            queue: Any = queue_module.Queue()
            threads = [threading.Thread(target=_work, args=(url, w, queue)) for w in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            procs = [ctx.Process(target=_work, args=(url, w, queue)) for w in range(workers)]
            for p in procs:
                p.start()
        results = [queue.get(timeout=120) for _ in range(workers)]
        if not embedded:
            for p in procs:
                p.join(30)
        for worker, done, spent, blocked_by in sorted(results):
            print(f"worker {worker}: {done:4d} calls, ${spent:.6f}, then blocked by {blocked_by}")
        print()
        for s in lim.status("search"):
            split = f" [{s.split_value}]" if s.split_value else ""
            print(
                f"{s.budget}{split}: spent ${s.spent_usd:.6f} of ${s.cap_usd:.2f}, "
                f"held ${s.held_usd:.6f}, resets {s.resets_at:%Y-%m-%d %H:%M} UTC"
            )
        entries = lim.client.xrange(lim.audit_key("search"))
        counts: dict[str, int] = {}
        for _, fields in entries:
            event = fields[b"event"].decode()
            counts[event] = counts.get(event, 0) + 1
        print("\naudit:", ", ".join(f"{n} x {e}" for e, n in sorted(counts.items())))
        total = sum(r[2] for r in results)
        within = all(s.spent_usd <= s.cap_usd for s in lim.status("search"))
        print(
            f"total settled by the workers ${total:.6f};",
            "every budget stayed within its cap" if within else "A BUDGET WENT OVER ITS CAP",
        )
        if shell_url is not None and urlsplit(url).scheme in ("redis", "rediss"):
            print(
                f"\nread the audit trail with:  redis-cli -u {shell_url} XRANGE "
                f"'{lim.audit_key('search')}' - +"
            )
    return 0 if within else 1
