"""Scale: cost per reserve+settle and Redis memory per entity as projects, split values and live
holds grow, against a reference server that stays at size 1 (0 holds), in the same run.

Two private redis-servers: the reference holds one project, one customer and no live hold;
the other grows, one dimension at a time (a fresh server per dimension):

- projects: tenants covered by ``[defaults]`` (each registers on its first reserve);
- split values: customers of one project (its per-customer budget gets one instance each);
- live holds: reservations of one project taken and never settled (lease of an hour).

At every size, reserve+settle pairs alternate between the two servers (on a random existing
project / customer of the grown one), in rounds; per server, cost is the server µs per pair
from ``INFO commandstats`` (FCALL usec, reset every round) and the client's p50 pair latency.
The figure is grown / reference (median over rounds; at the smallest size both servers hold
the same state, so that ratio shows the method's own noise); cost is flat when the server
ratio stays within 1.20 at every size (the p50 ratio, which the client's scheduling on two
busy cores also moves, is shown beside it). Memory per entity is the ``INFO memory``
``used_memory`` delta over the entities added, and ``MEMORY USAGE`` per key kind at the
largest size says where it lives; "Lua MB" is the Functions' Lua VM. After the largest split
values step the library is loaded again (FUNCTION LOAD REPLACE, as after a restart: the
scripts' cross-call caches start empty) and measured once more.

CI-sized by default (seconds); ``--full`` grows to 10k projects, 100k customers, 100k holds.

    python benchmarks/scale.py [--full] [--pairs N] [--json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from _common import (
    MODEL,
    RESERVE,
    SETTLE,
    TAGS,
    emit,
    environment,
    fcall_usec,
    header,
    mix,
    percentile,
    private_server,
    progress,
    project_toml,
    table,
)

from prism_limiter import Limiter, Policy
from prism_limiter.engine._scripts import library

SIZES = {
    "projects": [1, 100, 1000],
    "split values": [1, 1000, 10000],
    "live holds": [0, 1000, 10000],
}
FULL = {
    "projects": [1, 100, 1000, 10000],
    "split values": [1, 1000, 10000, 100000],
    "live holds": [0, 1000, 10000, 100000],
}
FLAT = 1.20
LIMITS = 4  # 3 budgets (one split by customer) + 1 rate limit
POLICY = Policy.from_toml(project_toml("", *mix(LIMITS), section="defaults"))


def _limiter(url: str) -> Limiter:
    lim = Limiter.from_url(url, max_projects=1_000_000, socket_timeout=5)
    lim.apply_policy(POLICY)
    return lim


def _pair(lim: Limiter, project: str, customer: str) -> None:
    tags = {**TAGS, "customer": customer}
    lim.reserve(project, MODEL, tags=tags, **RESERVE).settle(**SETTLE)


def _memory(lim: Limiter) -> int:
    return int(lim.client.info("memory")["used_memory"])


def _lua_heap(lim: Limiter) -> int:
    """Bytes of the Lua VM that runs Functions (its heap holds the scripts' caches)."""
    info = lim.client.info("memory")
    return int(info.get("used_memory_vm_functions", info.get("used_memory_lua", 0)))


def _kind(key: str) -> str:
    name = key.rsplit("}:", 1)[-1] if "}:" in key else key
    return "usage:<day>" if name.startswith("usage:") else name


def _breakdown(lim: Limiter) -> dict[str, dict[str, int]]:
    """MEMORY USAGE (exact) summed per key kind (policy, budgets, holds, ...)."""
    out: dict[str, dict[str, int]] = {}
    for raw in lim.client.scan_iter(count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        used = lim.client.memory_usage(key, samples=0) or 0
        kind = out.setdefault(_kind(key), {"keys": 0, "bytes": 0})
        kind["keys"] += 1
        kind["bytes"] += int(used)
    return out


def _measure(
    ref: Limiter, big: Limiter, pick: Callable[[], tuple[str, str]], pairs: int, rounds: int
) -> dict[str, Any]:
    """Pairs alternating between the two servers, in rounds (commandstats reset per round);
    the figures are medians over rounds."""
    lat: dict[str, list[float]] = {"ref": [], "big": []}
    per_round: dict[str, list[float]] = {"ref": [], "big": []}
    n = max(pairs // rounds, 1)
    for _ in range(rounds):
        for lim in (ref, big):
            lim.client.config_resetstat()
        for i in range(n):
            order = (("ref", ref), ("big", big)) if i % 2 else (("big", big), ("ref", ref))
            for name, lim in order:
                project, customer = ("p0", "c0") if name == "ref" else pick()
                t0 = time.perf_counter()
                _pair(lim, project, customer)
                lat[name].append((time.perf_counter() - t0) * 1e6)
        for name, lim in (("ref", ref), ("big", big)):
            calls, usec = fcall_usec(lim.client)
            if calls != 2 * n:
                raise RuntimeError(f"expected {2 * n} FCALLs on {name}, counted {calls}")
            per_round[name].append(usec / n)
    out: dict[str, Any] = {}
    for name in ("ref", "big"):
        out[name] = {
            "server_us_per_pair": statistics.median(per_round[name]),
            "server_rounds": per_round[name],
            "p50_us": percentile(lat[name], 0.5),
            "p99_us": percentile(lat[name], 0.99),
        }
    ratios = [b / r for b, r in zip(per_round["big"], per_round["ref"], strict=True)]
    out["server_ratio"] = statistics.median(ratios)
    out["p50_ratio"] = out["big"]["p50_us"] / out["ref"]["p50_us"]
    return out


def _grow(dimension: str, lim: Limiter, start: int, stop: int) -> None:
    for i in range(start, stop):
        if dimension == "projects":
            _pair(lim, f"p{i}", "c0")
        elif dimension == "split values":
            _pair(lim, "p0", f"c{i}")
        else:  # a live hold: reserved, never settled, its lease an hour
            lim.reserve("p0", MODEL, tags={**TAGS, "customer": "c0"}, ttl_s=3600, **RESERVE)


def dimension_run(
    dimension: str, sizes: list[int], ref: Limiter, url: str, *, pairs: int, rounds: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    big = _limiter(url)
    _pair(big, "p0", "c0")  # the same starting state as the reference
    steps = []
    have = 1 if dimension != "live holds" else 0
    for size in sizes:
        before = _memory(big)
        t0 = time.perf_counter()
        progress(f"scale: {dimension} -> {size:,}")
        _grow(dimension, big, have, size)
        grow_s = time.perf_counter() - t0
        added = size - have
        after = _memory(big)
        have = max(have, size)
        n = have

        def pick(n: int = n) -> tuple[str, str]:
            i = rng.randrange(max(n, 1))
            if dimension == "projects":
                return f"p{i}", "c0"
            if dimension == "split values":
                return "p0", f"c{i}"
            return "p0", "c0"

        step = {"size": size, "grow_s": grow_s, **_measure(ref, big, pick, pairs, rounds)}
        step["bytes_per_entity"] = (after - before) / added if added > 0 else None
        step["lua_heap_bytes"] = _lua_heap(big)
        steps.append(step)
    reloaded = None
    if dimension == "split values":
        # The same state with the Functions' Lua VM fresh: FUNCTION LOAD REPLACE of the same
        # library (what a restart does) drops what the scripts cache across calls.
        big.client.function_load(library()[1], replace=True)
        fresh_heap = _lua_heap(big)
        reloaded = {
            "size": have,
            "lua_heap_bytes_after_load": fresh_heap,
            **_measure(ref, big, pick, pairs, rounds),
            "lua_heap_bytes": _lua_heap(big),
        }
    worst_server = max(s["server_ratio"] for s in steps)
    worst_p50 = max(s["p50_ratio"] for s in steps)
    memory = [s["bytes_per_entity"] for s in steps if s["bytes_per_entity"] is not None]
    result = {
        "sizes": sizes,
        "steps": steps,
        "worst_server_ratio": worst_server,
        "worst_p50_ratio": worst_p50,
        "flat": worst_server <= FLAT,
        "bytes_per_entity_largest_step": memory[-1] if memory else None,
        "after_library_reload": reloaded,
        "memory_by_key_kind": _breakdown(big),
    }
    big.close()
    return result


def run(full: bool, pairs: int, rounds: int, seed: int) -> dict[str, Any]:
    sizes = FULL if full else SIZES
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        ref = _limiter(stack.enter_context(private_server()))
        _pair(ref, "p0", "c0")
        env = environment(ref.client)
        for dimension, dim_sizes in sizes.items():
            with private_server() as url:
                results[dimension] = dimension_run(
                    dimension, dim_sizes, ref, url, pairs=pairs, rounds=rounds, seed=seed
                )
        ref.close()
    return {
        "benchmark": "scale",
        "full": full,
        "pairs_per_size": pairs,
        "rounds": rounds,
        "limits": "3 budgets (one split by customer) + 1 rate limit, from [defaults]",
        "flat_within": FLAT,
        "environment": env,
        "dimensions": results,
    }


def render(report: dict[str, Any]) -> str:
    rows = []
    for dimension, res in report["dimensions"].items():
        for s in res["steps"]:
            per = s["bytes_per_entity"]
            rows.append(
                [
                    f"{dimension} {s['size']:,}",
                    s["big"]["server_us_per_pair"],
                    s["ref"]["server_us_per_pair"],
                    s["server_ratio"],
                    s["big"]["p50_us"],
                    s["ref"]["p50_us"],
                    s["p50_ratio"],
                    "-" if per is None else f"{per:,.0f}",
                    f"{s['lua_heap_bytes'] / 1e6:.2f}",
                ]
            )
    for dimension, res in report["dimensions"].items():
        again = res.get("after_library_reload")
        if again:
            rows.append(
                [
                    f"{dimension} {again['size']:,}, library reloaded",
                    again["big"]["server_us_per_pair"],
                    again["ref"]["server_us_per_pair"],
                    again["server_ratio"],
                    again["big"]["p50_us"],
                    again["ref"]["p50_us"],
                    again["p50_ratio"],
                    "-",
                    f"{again['lua_heap_bytes'] / 1e6:.2f}",
                ]
            )
    flat = [
        [
            dimension,
            f"{res['sizes'][0]:,} -> {res['sizes'][-1]:,}",
            res["worst_server_ratio"],
            res["worst_p50_ratio"],
            "yes" if res["flat"] else "no",
        ]
        for dimension, res in report["dimensions"].items()
    ]
    kinds = []
    for dimension, res in report["dimensions"].items():
        top = sorted(res["memory_by_key_kind"].items(), key=lambda kv: -kv[1]["bytes"])[:4]
        kinds.append(
            [dimension, ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB ({v['keys']})" for k, v in top)]
        )
    return "\n".join(
        [
            header(report),
            f"{report['limits']}; {report['pairs_per_size']} pairs per size on each server,"
            " interleaved",
            "",
            table(
                [
                    "size",
                    "server us",
                    "ref us",
                    "ratio",
                    "p50 us",
                    "ref p50",
                    "ratio",
                    "bytes/entity",
                    "Lua MB",
                ],
                rows,
            ),
            "",
            table(
                [
                    "dimension",
                    "sizes",
                    "worst server ratio",
                    "worst p50 ratio",
                    f"flat (<= {FLAT:g})",
                ],
                flat,
            ),
            "",
            table(["dimension", "memory at the largest size (MEMORY USAGE, keys)"], kinds),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="10k projects, 100k values/holds")
    parser.add_argument("--pairs", type=int, default=400, help="pairs per size and server")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per size (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.full, args.pairs, args.rounds, args.seed), args.json, render)


if __name__ == "__main__":
    main()
