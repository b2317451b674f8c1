"""Server µs per call of the reserve, settle and release scripts against a no-op with the same
KEYS and ARGV, at 1, 5 and 20 matching limits, from Redis' own ``INFO commandstats``.

Each phase runs alone between a ``CONFIG RESETSTAT`` and a read of ``cmdstat_fcall`` (usec /
calls), so the figure is one script's: ``reserve`` (N reserves), ``settle`` (settling them),
``release`` (releasing N reserves taken outside the phase), and for each a no-op Function
called with exactly the KEYS and ARGV that script got. Phases alternate in rounds; the median
over rounds is reported. Server time excludes the network and the client: it is the Lua work
(and the commands it calls) on Redis' one thread. Redis counts the commands a script calls
under their own names, so the same stats split each script's time into those commands ("their
us") and the rest: the Lua code itself and the ``redis.call`` bridge ("Lua us").

With ``--breakdown`` (on by default) it also times parts of the work, the way a profile would
(the Lua VM inside Redis has no profiler): probe Functions, loaded as a second library built
from the same shipped Lua sources, run the shared steps alone on a live hold's KEYS and ARGV —
``begin`` (the per-call context: server TIME, the ARGV head, the usage day), reading and
decoding the hold record, reading the instances it names (one HMGET), then also building a
view of each (the whole ``load_record``) — and three unit costs: 10 ``redis.call``, 10 calls
through the ``W`` write wrapper, 10 splits of a hold record. If the Lua helpers were renamed,
the breakdown says so and is skipped.

    python benchmarks/server_time.py [--calls N] [--rounds R] [--limits 1 5 20]
                                     [--no-breakdown] [--json]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import redis
from _common import (
    MODEL,
    NOOP_FUNCTION,
    RESERVE,
    SETTLE,
    TAGS,
    call_shapes,
    command_stats,
    emit,
    environment,
    fcall_usec,
    header,
    load_noop,
    mix,
    policy,
    private_server,
    progress,
    table,
)

from prism_limiter import Limiter, Reservation
from prism_limiter.engine._scripts import library

SCRIPTS = ("reserve", "settle", "release")
PROBES = {
    "begin": "begin(keys, argv) return 1",
    "begin+record": "begin(keys, argv) rec_decode(redis.call('HGET', K_HOLDS, argv[6])) return 1",
    "begin+record+HMGET": (
        "begin(keys, argv) local rec = rec_decode(redis.call('HGET', K_HOLDS, argv[6]))"
        " local f = {} for _, i in ipairs(split(rec[R_IIDS], LS)) do"
        " f[#f + 1], f[#f + 2], f[#f + 3] = i, i .. '|c', i .. '|o' end"
        " for _, i in ipairs(split(rec[R_RATES], LS)) do f[#f + 1], f[#f + 2] = i, i .. '|cfg' end"
        " redis.call('HMGET', K_BUDGETS, unpack(f)) return 1"
    ),
    "begin+record+load": (
        "begin(keys, argv) load_record(rec_decode(redis.call('HGET', K_HOLDS, argv[6]))) return 1"
    ),
    "10 redis.call": "for i = 1, 10 do redis.call('HGET', keys[4], '-') end return 1",
    "10 W() calls": "for i = 1, 10 do W('HDEL', keys[4], '-') end return 1",
    "10 record splits": (
        "local raw = redis.call('HGET', keys[4], argv[6])"
        " for i = 1, 10 do split(raw, FS) end return 1"
    ),
}


def probe_library() -> str:
    """The shipped library's code under another name, its functions replaced by the probes."""
    name, code = library()
    body = code.replace(f"#!lua name={name}", "#!lua name=prism_bench_probe", 1)
    body = body[: body.index("redis.register_function(")]
    for i, probe in enumerate(PROBES.values()):
        body += f"local function bench_probe_{i}(keys, argv) {probe} end\n"
        body += f"redis.register_function('bench_probe_{i}', bench_probe_{i})\n"
    return body


def _breakdown(
    lim: Limiter, project: str, calls: int, rounds: int, release: tuple[Any, ...]
) -> dict[str, Any]:
    """Server µs of each probe on a live hold's KEYS/ARGV (the shape of its release)."""
    client = lim.client
    try:
        client.function_load(probe_library(), replace=True)
    except redis.ResponseError as exc:
        return {"error": f"the probes no longer fit the Lua helpers: {exc}"}
    live = lim.reserve(project, MODEL, tags=TAGS, **RESERVE)
    shape = (*release[:-1], live.id)  # the release ARGV ends with the reservation id
    names = ["no-op", *PROBES]
    functions = [NOOP_FUNCTION, *(f"bench_probe_{i}" for i in range(len(PROBES)))]
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(rounds):
        for name, function in zip(names, functions, strict=True):
            client.config_resetstat()
            for _ in range(calls):
                client.fcall(function, *shape)
            n, usec = fcall_usec(client)
            samples[name].append(usec / n)
    live.release()
    client.function_delete("prism_bench_probe")
    return {k: statistics.median(v) for k, v in samples.items()}


def run(calls: int, rounds: int, counts: Sequence[int], breakdown: bool) -> dict[str, Any]:
    with private_server() as url:
        lim = Limiter.from_url(url)
        projects = {f"s{n}": n for n in counts}
        lim.apply_policy(policy(projects))
        client = lim.client
        load_noop(client)

        inner: dict[str, list[dict[str, float]]] = {}

        def phase(body: Callable[[], object], name: str = "") -> float:
            client.config_resetstat()
            body()
            stats = command_stats(client)
            n, usec = fcall_usec(client)
            if n != calls:  # nothing else may run an FCALL during a phase
                raise RuntimeError(f"expected {calls} FCALLs in the phase, counted {n}")
            if name:  # the commands the script called, per script call
                called = {k: v for k, v in stats.items() if k not in ("fcall", "config|resetstat")}
                inner.setdefault(name, []).append(
                    {
                        "commands": sum(v["calls"] for v in called.values()) / n,
                        "usec": sum(v["usec"] for v in called.values()) / n,
                    }
                )
            return usec / n

        results: dict[str, Any] = {}
        for project, n in projects.items():
            shapes = call_shapes(url, project)

            def reserve_many(project: str = project) -> list[Reservation]:
                return [lim.reserve(project, MODEL, tags=TAGS, **RESERVE) for _ in range(calls)]

            def noop(shape: tuple[Any, ...]) -> Callable[[], object]:
                return lambda: [client.fcall(NOOP_FUNCTION, *shape) for _ in range(calls)]

            for r in reserve_many():  # warm up: every instance exists, the caches are full
                r.settle(**SETTLE)
            samples: dict[str, list[float]] = {k: [] for s in SCRIPTS for k in (s, f"{s} no-op")}
            progress(f"server time: {n} limits, {rounds} rounds of {calls} calls per phase")
            for _ in range(rounds):
                held: list[Reservation] = []
                gone: list[Reservation] = []

                def take(into: list[Reservation] = held) -> None:
                    into.extend(reserve_many())

                def settle_all(these: list[Reservation] = held) -> None:
                    for r in these:
                        r.settle(**SETTLE)

                def release_all(these: list[Reservation] = gone) -> None:
                    for r in these:
                        r.release()

                samples["reserve"].append(phase(take, "reserve"))
                samples["reserve no-op"].append(phase(noop(shapes["reserve"])))
                samples["settle"].append(phase(settle_all, "settle"))
                samples["settle no-op"].append(phase(noop(shapes["settle"])))
                take(gone)  # outside any phase
                samples["release"].append(phase(release_all, "release"))
                samples["release no-op"].append(phase(noop(shapes["release"])))
            budgets, rates = mix(n)
            row: dict[str, Any] = {"budgets": budgets, "rate_limits": rates}
            for s in SCRIPTS:
                ours = statistics.median(samples[s])
                floor = statistics.median(samples[f"{s} no-op"])
                row[s] = {
                    "usec_per_call": ours,
                    "noop_usec_per_call": floor,
                    "ratio": ours / floor,
                    "rounds": samples[s],
                    "noop_rounds": samples[f"{s} no-op"],
                    "argv": len(shapes[s]) - 1 - shapes[s][0],
                    "keys": shapes[s][0],
                    "commands_per_call": statistics.median(x["commands"] for x in inner[s]),
                    "commands_usec_per_call": statistics.median(x["usec"] for x in inner[s]),
                }
            inner.clear()
            if breakdown:
                row["breakdown"] = _breakdown(lim, project, calls, rounds, shapes["release"])
            results[str(n)] = row
        report = {
            "benchmark": "server_time",
            "calls_per_phase": calls,
            "rounds": rounds,
            "environment": environment(client),
            "configs": results,
        }
        lim.close()
    return report


def render(report: dict[str, Any]) -> str:
    rows = []
    for n, row in report["configs"].items():
        for s in SCRIPTS:
            v = row[s]
            rows.append(
                [
                    f"{n} ({row['budgets']}b+{row['rate_limits']}r) {s}",
                    v["keys"],
                    v["argv"],
                    v["usec_per_call"],
                    v["noop_usec_per_call"],
                    v["ratio"],
                    v["commands_per_call"],
                    v["commands_usec_per_call"],
                    v["usec_per_call"] - v["commands_usec_per_call"],
                ]
            )
    heads = [
        "limits script",
        "KEYS",
        "ARGV",
        "server us",
        "no-op us",
        "ratio",
        "commands",
        "their us",
        "Lua us",
    ]
    lines = [
        header(report),
        f"INFO commandstats, {report['rounds']} rounds x {report['calls_per_phase']} calls"
        " per phase, median of rounds",
        "",
        table(heads, rows),
    ]
    parts = {n: row["breakdown"] for n, row in report["configs"].items() if "breakdown" in row}
    errors = {b["error"] for b in parts.values() if "error" in b}
    parts = {n: b for n, b in parts.items() if "error" not in b}
    if parts:
        names = list(next(iter(parts.values())))
        rows = [[name, *(parts[n][name] for n in parts)] for name in names]
        lines += [
            "",
            "breakdown, server us per call (probes on a live hold's KEYS/ARGV):",
            table(["part", *(f"{n} limits" for n in parts)], rows),
        ]
    lines += sorted(errors)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per phase")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument(
        "--breakdown", action=argparse.BooleanOptionalAction, default=True, help="probe parts"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.calls, args.rounds, args.limits, args.breakdown), args.json, render)


if __name__ == "__main__":
    main()
