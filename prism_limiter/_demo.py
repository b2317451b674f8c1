"""The demo: several worker processes share one budget until it blocks.

It runs against ``--url`` when given, else a private ``redis-server`` it starts (and stops),
else the embedded ``memory://`` store with threads instead of processes.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import random
import threading
from contextlib import ExitStack
from typing import Any

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


def run(url: str | None, workers: int) -> int:
    with ExitStack() as stack:
        if url is None:
            url = stack.enter_context(redis_server()) if redis_server_binary() else "memory://demo"
        lim = Limiter.from_url(url)
        version = lim.apply_policy(Policy.from_toml(POLICY), actor="demo").version
        print(f"policy version {version} applied on {url}")
        embedded = url.startswith("memory://")
        if not embedded:
            print(
                f"tail the audit with:  redis-cli -u {url} XREAD BLOCK 0 STREAMS "
                f"'{lim.audit_key('search')}' '$'\n"
            )
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
    return 0 if within else 1
