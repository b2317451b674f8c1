"""Throughput of reserve+settle pairs with 1, 2, 4 and 8 processes, and with N asyncio tasks in
one process, each against the no-op floor measured the same way (pairs of no-op FCALLs with
the KEYS and ARGV of that reserve and that settle, on the limiter's own client).

Processes: every worker is started and warmed up first, then they all wait on one barrier
with the parent; each phase (ours, or the floor) begins when the barrier opens and lasts
``--seconds``. Phases alternate ours, floor, floor, ours (ABBA) so drift hits both alike; the
rate is all pairs completed over the phase's longest worker run. The policy is the goal's:
3 budgets (one split by customer) and 1 rate limit; every worker uses its own customer.

asyncio: one ``AsyncLimiter`` and N tasks each looping reserve -> settle, against the same N
tasks looping two no-op FCALLs on ``limiter.client``.

    python benchmarks/throughput.py [--procs 1 2 4 8] [--tasks 8 32] [--seconds S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.synchronize import Barrier
from typing import Any

from _common import (
    MODEL,
    NOOP_FUNCTION,
    RESERVE,
    SETTLE,
    TAGS,
    call_shapes,
    emit,
    environment,
    header,
    load_noop,
    policy,
    private_server,
    progress,
    table,
)

from prism_limiter import AsyncLimiter, Limiter

PROJECT = "tp"
LIMITS = 4  # 3 budgets + 1 rate limit
PHASES = ("ours", "floor", "floor", "ours")


def _worker(
    *,
    url: str,
    index: int,
    shapes: dict[str, tuple[Any, ...]],
    seconds: float,
    barrier: Barrier,
    results: Any,
) -> None:
    lim = Limiter.from_url(url)
    client = lim.client
    tags = {**TAGS, "customer": f"org:{index}"}

    def ours() -> None:
        lim.reserve(PROJECT, MODEL, tags=tags, **RESERVE).settle(**SETTLE)

    def floor() -> None:
        client.fcall(NOOP_FUNCTION, *shapes["reserve"])
        client.fcall(NOOP_FUNCTION, *shapes["settle"])

    bodies = {"ours": ours, "floor": floor}
    for _ in range(100):  # warm up: connections, compiled policy, instances
        ours()
        floor()
    for phase in PHASES:
        body = bodies[phase]
        barrier.wait()
        t0 = time.monotonic()
        stop = t0 + seconds
        done = 0
        while time.monotonic() < stop:
            body()
            done += 1
        results.put((phase, index, done, time.monotonic() - t0))
    lim.close()


def processes(url: str, procs: int, seconds: float, shapes: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker,
            kwargs={
                "url": url,
                "index": i,
                "shapes": shapes,
                "seconds": seconds,
                "barrier": barrier,
                "results": results,
            },
        )
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    rates: dict[str, list[float]] = {"ours": [], "floor": []}
    for phase in PHASES:
        barrier.wait(timeout=120)  # every worker is up and warm: the clock starts for all
        got = [results.get(timeout=seconds + 60) for _ in range(procs)]
        if any(g[0] != phase for g in got):
            raise RuntimeError(f"workers out of step in phase {phase}: {got}")
        rates[phase].append(sum(g[2] for g in got) / max(g[3] for g in got))
    for w in workers:
        w.join(30)
    ours, floor = statistics.fmean(rates["ours"]), statistics.fmean(rates["floor"])
    return {
        "procs": procs,
        "pairs_per_s": ours,
        "floor_pairs_per_s": floor,
        "ratio": ours / floor,
        "phases": rates,
    }


async def _rate(fn: Callable[[], Awaitable[None]], tasks: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await fn()
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done / (time.monotonic() - t0)


async def tasks_run(url: str, tasks: int, seconds: float, shapes: dict[str, Any]) -> dict[str, Any]:
    async with AsyncLimiter.from_url(url) as lim:
        client = lim.client

        async def ours() -> None:
            r = await lim.reserve(PROJECT, MODEL, tags=TAGS, **RESERVE)
            await r.settle(**SETTLE)

        async def floor() -> None:
            await client.fcall(NOOP_FUNCTION, *shapes["reserve"])
            await client.fcall(NOOP_FUNCTION, *shapes["settle"])

        bodies = {"ours": ours, "floor": floor}
        await _rate(ours, tasks, 0.3)  # warm up
        await _rate(floor, tasks, 0.3)
        rates: dict[str, list[float]] = {"ours": [], "floor": []}
        for phase in PHASES:
            rates[phase].append(await _rate(bodies[phase], tasks, seconds))
    ours_r, floor_r = statistics.fmean(rates["ours"]), statistics.fmean(rates["floor"])
    return {
        "tasks": tasks,
        "pairs_per_s": ours_r,
        "floor_pairs_per_s": floor_r,
        "ratio": ours_r / floor_r,
        "phases": rates,
    }


def run(procs: Sequence[int], tasks: Sequence[int], seconds: float) -> dict[str, Any]:
    with private_server() as url:
        lim = Limiter.from_url(url)
        lim.apply_policy(policy({PROJECT: LIMITS}))
        load_noop(lim.client)
        shapes = call_shapes(url, PROJECT)
        env = environment(lim.client)
        out_procs = []
        for n in procs:
            progress(f"throughput: {n} processes, {len(PHASES)} phases of {seconds:g} s")
            out_procs.append(processes(url, n, seconds, shapes))
        out_tasks = []
        for n in tasks:
            progress(f"throughput: asyncio, {n} tasks, {len(PHASES)} phases of {seconds:g} s")
            out_tasks.append(asyncio.run(tasks_run(url, n, seconds, shapes)))
        lim.close()
    return {
        "benchmark": "throughput",
        "seconds": seconds,
        "limits": "3 budgets + 1 rate limit",
        "environment": env,
        "processes": out_procs,
        "asyncio": out_tasks,
    }


def render(report: dict[str, Any]) -> str:
    rows: list[list[object]] = [
        [f"{p['procs']} processes", p["pairs_per_s"], p["floor_pairs_per_s"], p["ratio"]]
        for p in report["processes"]
    ]
    rows += [
        [f"asyncio {t['tasks']} tasks", t["pairs_per_s"], t["floor_pairs_per_s"], t["ratio"]]
        for t in report["asyncio"]
    ]
    return "\n".join(
        [
            header(report),
            f"{report['limits']}, phases of {report['seconds']:g} s (ABBA), pairs/s",
            "",
            table(["clients", "reserve+settle/s", "2 no-op FCALL/s", "ratio"], rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tasks", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one phase")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.procs, args.tasks, args.seconds), args.json, render)


if __name__ == "__main__":
    main()
