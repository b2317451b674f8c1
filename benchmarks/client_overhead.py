"""Library Python per reserve+settle pair, with the script replies served from memory.

A real run on a private redis-server records every reply (``Recorder``); then ``Limiter`` is
driven with a stand-in client whose ``fcall``, ``register_script``, ``function_load`` and
``execute_command`` return those recorded replies at once (a dict look-up: no socket, no
redis-py). What is left is the library's own Python: validating the request, planning the
script arguments, the sans-I/O driver, parsing the replies into records (and, for the same
replies through ``AsyncLimiter`` in one task, the asyncio face on top). The goal is at most
30 µs per pair; the figure is the best of 20 rounds (as ``timeit`` does: on a shared machine
noise only ever adds time), with the p50/p99 of single pairs beside it. A cProfile of the same
loop (top 15 by own time, and own time per file) says where the time goes.

    python benchmarks/client_overhead.py [--pairs N] [--limits 1 4 10] [--profile-limits 4]
                                         [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    MODEL,
    RESERVE,
    ROOT,
    SETTLE,
    TAGS,
    Recorder,
    emit,
    environment,
    header,
    mix,
    percentile,
    policy,
    private_server,
    progress,
    script,
    table,
)

from prism_limiter import AsyncLimiter, Limiter

GOAL_US = 30.0
ROUNDS = 20


class _NoScript:
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the canned client serves FCALL only")


class CannedClient:
    """Answers like the recorded server did: one reply per script, per command."""

    def __init__(self, fcalls: dict[str, Any], commands: dict[tuple[Any, ...], Any]) -> None:
        self._fcalls = fcalls
        self._commands = commands

    def fcall(self, function: str, numkeys: int, *rest: Any) -> Any:
        return self._fcalls[script(function)]

    def execute_command(self, *args: Any) -> Any:
        return self._commands[args]

    def register_script(self, source: str) -> _NoScript:
        return _NoScript()

    def function_load(self, code: str, replace: bool = False) -> str:
        return "ok"

    def close(self) -> None:
        pass


class AsyncCannedClient:
    """The same canned replies for ``AsyncLimiter``: every call completes at once."""

    def __init__(self, canned: CannedClient) -> None:
        self._canned = canned

    async def fcall(self, function: str, numkeys: int, *rest: Any) -> Any:
        return self._canned.fcall(function, numkeys, *rest)

    async def execute_command(self, *args: Any) -> Any:
        return self._canned.execute_command(*args)

    def register_script(self, source: str) -> _NoScript:
        return _NoScript()

    async def function_load(self, code: str, replace: bool = False) -> str:
        return "ok"


async def _async_pairs(lim: AsyncLimiter, project: str, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        r = await lim.reserve(project, MODEL, tags=TAGS, **RESERVE)
        await r.settle(**SETTLE)
    return (time.perf_counter() - t0) * 1e6 / n


def async_us_per_pair(canned: CannedClient, project: str, pairs: int) -> list[float]:
    """Rounds of µs per pair through ``AsyncLimiter`` (one task, replies from memory)."""

    async def rounds() -> list[float]:
        lim = AsyncLimiter(AsyncCannedClient(canned))
        await _async_pairs(lim, project, 500)
        return [await _async_pairs(lim, project, pairs // ROUNDS) for _ in range(ROUNDS)]

    return asyncio.run(rounds())


def record(url: str, project: str) -> CannedClient:
    """Replies of a real reserve+settle of ``project`` (its policy applied)."""
    import redis  # noqa: PLC0415

    rec = Recorder(redis.Redis.from_url(url, socket_timeout=5))
    lim = Limiter(rec)
    for _ in range(3):
        lim.reserve(project, MODEL, tags=TAGS, **RESERVE).settle(**SETTLE)
    fcalls = {script(f): reply for f, _, reply in rec.fcalls}
    return CannedClient(fcalls, dict(rec.commands))


def pairs_loop(lim: Limiter, project: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        lim.reserve(project, MODEL, tags=TAGS, **RESERVE).settle(**SETTLE)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _where(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        pass
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if filename.startswith("<") or filename == "~":
        return "builtins"
    return "stdlib " + path.name


def profile(lim: Limiter, project: str, n: int, top: int) -> dict[str, Any]:
    prof = cProfile.Profile()
    prof.enable()
    pairs_loop(lim, project, n)
    prof.disable()
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    functions = [
        {
            "function": f"{_where(file)}:{line}({name})",
            "calls_per_pair": v[1] / n,
            "own_us_per_pair": v[2] / n * 1e6,
            "cum_us_per_pair": v[3] / n * 1e6,
            "own_share": v[2] / total,
        }
        for (file, line, name), v in rows
    ]
    files: dict[str, float] = {}
    for (file, _, _), v in raw.items():
        files[_where(file)] = files.get(_where(file), 0.0) + v[2]
    by_file = [
        {"file": k, "own_us_per_pair": t / n * 1e6, "own_share": t / total}
        for k, t in sorted(files.items(), key=lambda kv: kv[1], reverse=True)[:top]
    ]
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return {
        "pairs": n,
        "profiled_us_per_pair": total / n * 1e6,
        "top_own_time": functions,
        "by_file": by_file,
        "pstats": text.getvalue(),
    }


def run(pairs: int, counts: Sequence[int], profile_limits: int, top: int) -> dict[str, Any]:
    with private_server() as url:
        lim = Limiter.from_url(url)
        projects = {f"c{n}": n for n in counts}
        if profile_limits not in counts:
            projects[f"c{profile_limits}"] = profile_limits
        lim.apply_policy(policy(projects))
        canned = {p: record(url, p) for p in projects}
        env = environment(lim.client)
        lim.close()
    results: dict[str, Any] = {}
    for p, n in projects.items():
        fake = Limiter(canned[p])
        pairs_loop(fake, p, 500)  # warm up: caches filled
        progress(f"client overhead: {n} limits, {pairs} pairs from memory")
        samples = []
        for _ in range(ROUNDS):  # the best round is the figure (noise only ever adds time)
            t0 = time.perf_counter()
            pairs_loop(fake, p, pairs // ROUNDS)
            samples.append((time.perf_counter() - t0) * 1e6 / (pairs // ROUNDS))
        per = pairs_loop(fake, p, min(pairs, 5000))
        b, r = mix(n)
        results[str(n)] = {
            "budgets": b,
            "rate_limits": r,
            "us_per_pair": min(samples),
            "rounds_us_per_pair": samples,
            "p50_us": percentile(per, 0.5),
            "p99_us": percentile(per, 0.99),
        }
    p = f"c{profile_limits}"
    fake = Limiter(canned[p])
    pairs_loop(fake, p, 500)
    prof = profile(fake, p, min(pairs, 5000), top)
    goal = results[str(profile_limits)]["us_per_pair"]
    async_rounds = async_us_per_pair(canned[p], p, pairs)
    return {
        "benchmark": "client_overhead",
        "pairs": pairs,
        "goal_us": GOAL_US,
        "environment": env,
        "configs": results,
        "profile_limits": profile_limits,
        "goal_limits_us_per_pair": goal,
        "async_us_per_pair": min(async_rounds),
        "async_rounds_us_per_pair": async_rounds,
        "profile": prof,
    }


def render(report: dict[str, Any]) -> str:
    rows = [
        [
            f"{n} ({row['budgets']}b+{row['rate_limits']}r)",
            row["us_per_pair"],
            row["p50_us"],
            row["p99_us"],
            "yes" if row["us_per_pair"] <= report["goal_us"] else "no",
        ]
        for n, row in report["configs"].items()
    ]
    prof = report["profile"]
    top = [
        [
            f["function"],
            f["calls_per_pair"],
            f["own_us_per_pair"],
            f["cum_us_per_pair"],
            f"{f['own_share']:.0%}",
        ]
        for f in prof["top_own_time"]
    ]
    files = [[f["file"], f["own_us_per_pair"], f"{f['own_share']:.0%}"] for f in prof["by_file"]]
    return "\n".join(
        [
            header(report),
            "replies served from memory: the library's own Python per reserve+settle pair",
            "",
            table(["limits", "us/pair", "p50 us", "p99 us", f"<= {report['goal_us']:g} us"], rows),
            f"AsyncLimiter, {report['profile_limits']} limits, one task:"
            f" {report['async_us_per_pair']:.1f} us/pair",
            "",
            f"cProfile, {report['profile_limits']} limits, {prof['pairs']} pairs"
            f" ({prof['profiled_us_per_pair']:.1f} us/pair under the profiler), top by own time:",
            table(["function", "calls/pair", "own us", "cum us", "own"], top),
            "",
            "own time per file:",
            table(["file", "own us/pair", "share"], files),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--profile-limits", type=int, default=4)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.pairs, args.limits, args.profile_limits, args.top), args.json, render)


if __name__ == "__main__":
    main()
