"""Run every benchmark (each in its own process, on its own private redis-server), print one
summary table with each goal and whether it is met, and write all the figures as JSON.

CI-sized by default (a few minutes on two cores); ``--full`` runs the scale benchmark at its
large sizes (10k projects, 100k split values, 100k live holds). ``--only`` picks benchmarks.

    python benchmarks/run_all.py [--full] [--only latency server_time ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import table

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "latency",
    "server_time",
    "client_overhead",
    "throughput",
    "scale",
    "overspend",
    "lua_profile",
)


def _run(name: str, extra: list[str]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    print(f"== {name}", file=sys.stderr, flush=True)
    out = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), "--json", *extra],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(out.stdout), time.perf_counter() - t0


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal with its measured value, when its benchmark ran."""
    out: list[dict[str, Any]] = []

    def goal(name: str, value: float, target: str, met: bool, note: str = "") -> None:
        out.append({"goal": name, "value": value, "target": target, "met": met, "note": note})

    if "latency" in r:
        ratio = r["latency"]["configs"]["4"]["ratio_fcall_p50"]
        goal("reserve+settle p50 / 2 no-op FCALL p50 (3b+1r)", ratio, "<= 1.25", ratio <= 1.25)
    if "server_time" in r:
        five = r["server_time"]["configs"]["5"]
        for s in ("reserve", "settle"):
            v = five[s]["ratio"]
            goal(f"server us {s} / no-op, same KEYS+ARGV (5 limits)", v, "<= 2", v <= 2)
    if "client_overhead" in r:
        v = r["client_overhead"]["goal_limits_us_per_pair"]
        goal("library Python per pair, us (3b+1r)", v, "<= 30", v <= 30)
    if "throughput" in r:
        procs = {p["procs"]: p for p in r["throughput"]["processes"]}
        if 8 in procs:
            v = procs[8]["ratio"]
            goal("8 processes / no-op floor (2 cores)", v, ">= 0.70", v >= 0.70)
        for t in r["throughput"]["asyncio"]:
            v = t["ratio"]
            goal(f"asyncio {t['tasks']} tasks / async no-op floor", v, ">= 0.80", v >= 0.80)
    if "scale" in r:
        for dim in ("split values", "live holds"):
            d = r["scale"]["dimensions"][dim]
            v = d["worst_server_ratio"]
            sizes = f"{d['sizes'][0]:,} -> {d['sizes'][-1]:,}"
            goal(f"cost flat, {dim} {sizes} (server us ratio)", v, "<= 1.20", v <= 1.20)
    return out


def context(r: dict[str, Any]) -> list[list[object]]:
    """Figures beside the goals: the other sizes, the limits library, overspend, memory."""
    rows: list[list[object]] = []
    if "latency" in r:
        lat = r["latency"]
        for n, c in lat["configs"].items():
            rows.append(
                [
                    f"reserve+settle p50 us, {n} limits (2 no-op FCALL us)",
                    f"{c['ours']['pair']['p50_us']:.0f} ({c['noop-fcall']['pair']['p50_us']:.0f})",
                    f"{c['ratio_fcall_p50']:.2f}x",
                ]
            )
        lib = lat["limits_library"]
        rows.append(
            [
                f"limits {lib['version']} moving-window hit p50 us: 1 limit, 3 limits",
                f"{lib['hit_1']['p50_us']:.0f}, {lib['hit_3']['p50_us']:.0f}",
                "",
            ]
        )
    if "server_time" in r:
        for n, c in r["server_time"]["configs"].items():
            rows.append(
                [
                    f"server us reserve / settle / release, {n} limits",
                    " / ".join(f"{c[s]['usec_per_call']:.0f}" for s in SCRIPTS),
                    " / ".join(f"{c[s]['ratio']:.1f}x" for s in SCRIPTS),
                ]
            )
    if "throughput" in r:
        for p in r["throughput"]["processes"]:
            rows.append(
                [
                    f"pairs/s, {p['procs']} processes (no-op floor)",
                    f"{p['pairs_per_s']:.0f} ({p['floor_pairs_per_s']:.0f})",
                    f"{p['ratio']:.2f}",
                ]
            )
    if "scale" in r:
        for dim, d in r["scale"]["dimensions"].items():
            per = d["bytes_per_entity_largest_step"]
            rows.append(
                [
                    f"scale {dim} {d['sizes'][0]:,} -> {d['sizes'][-1]:,}: worst cost ratio,"
                    " bytes per entity",
                    f"{d['worst_server_ratio']:.2f}, {per:,.0f}" if per else "-",
                    "flat" if d["flat"] else "not flat",
                ]
            )
    if "overspend" in r:
        for run in r["overspend"]["runs"]:
            rows.append(
                [
                    f"spent / cap, 32 workers, model call {run['call_ms']:g} ms: naive, ours",
                    f"{run['naive']['overspend']:.2f}x, {run['ours']['overspend']:.2f}x",
                    "",
                ]
            )
    return rows


SCRIPTS = ("reserve", "settle", "release")


def render(results: dict[str, Any]) -> str:
    g = results["goals"]
    goal_rows = [
        [x["goal"], f"{x['value']:.2f}", x["target"], "yes" if x["met"] else "NO"] for x in g
    ]
    met = sum(1 for x in g if x["met"])
    env = next(iter(results["benchmarks"].values()))["environment"]
    info = env["redis_info_server"]
    return "\n".join(
        [
            f"prism_limiter {env['commit']}, redis {info.get('redis_version')}, {env['nproc']}"
            f" cores {env['cpu'].get('Model name', '')}, python {env['python']}"
            f"{', --full' if results['full'] else ''}",
            "",
            table(["goal", "measured", "target", "met"], goal_rows),
            f"{met} of {len(g)} goals met",
            "",
            table(["also measured", "value", "ratio"], context(results["benchmarks"])),
            *profile(results["benchmarks"]),
        ]
    )


def profile(r: dict[str, Any]) -> list[str]:
    """Where the server time of a reserve and a settle goes (lua_profile), stage by stage."""
    if "lua_profile" not in r:
        return []
    p = r["lua_profile"]
    rows: list[list[object]] = []
    for script, s in p["scripts"].items():
        for stage in s["stages"]:
            us = stage["us"]
            rows.append(
                [
                    f"{script}: {stage['stage']}",
                    float("nan") if us is None else max(0.0, us - p["mark_us"]),
                ]
            )
        rows.append([f"{script}: all, as shipped", s["fcall_us"]])
    head = f"server us by stage, {p['limits']} limits (lua_profile, one mark's cost removed)"
    return ["", table([head, "us"], rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the scale benchmark's large sizes")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    reports: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in args.only:
        extra = ["--full"] if name == "scale" and args.full else []
        reports[name], seconds[name] = _run(name, extra)
    results = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "full": args.full,
        "seconds": seconds,
        "goals": goals(reports),
        "benchmarks": reports,
    }
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(render(results))
    print(f"\nall figures: {args.out}")


if __name__ == "__main__":
    main()
