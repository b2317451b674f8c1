"""reserve+settle latency for 1, 3, 4 and 10 matching limits against two no-op round trips.

One sync client on loopback, one private redis-server. Per configuration (N limits: budgets
and rate limits from ``_common.mix``; 4 is the goal's 3 budgets + 1 rate limit) it times:

- ours: ``reserve`` then ``settle`` of one request (each call timed; the pair is their sum);
- the floor: two no-op scripts with exactly the KEYS and ARGV of that reserve and that settle,
  as ``FCALL`` of a no-op Redis Function and as ``EVALSHA`` of ``return 1``, on the limiter's
  own client;
- the ``limits`` library's moving window: ``MovingWindowRateLimiter.hit`` on its
  ``RedisStorage`` (one Lua script per limit), for 1 and for 3 limits.

Every variant runs once per iteration, in a rotating order, so noise hits all alike. The ratio
is ours / the FCALL floor at the median. "Python" is the part of each pair spent outside the
client's ``fcall``: the library's own Python, measured in place (with a real server sharing
the cores, unlike client_overhead.py's replies from memory).

    python benchmarks/latency.py [--iterations N] [--warmup N] [--limits 1 3 4 10] [--json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from _common import (
    MODEL,
    NOOP_FUNCTION,
    NOOP_SCRIPT,
    RESERVE,
    SETTLE,
    TAGS,
    call_shapes,
    emit,
    environment,
    header,
    interleave,
    load_noop,
    mix,
    policy,
    private_server,
    progress,
    summary,
    table,
)
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from prism_limiter import Limiter

Timed = Callable[[], list[float]]


def _two(first: Callable[[], object], second: Callable[[], object]) -> Timed:
    """Time two calls one after the other: [µs of the first, µs of the second]."""

    def pair() -> list[float]:
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        return [(t1 - t0) * 1e6, (t2 - t1) * 1e6]

    return pair


class TimedClient:
    """The limiter's own client, with the time spent inside its ``fcall`` added up (the rest
    of a pair is the library's Python, measured in place)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.inside = 0.0

    def fcall(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._client.fcall(*args)
        finally:
            self.inside += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def ours(lim: Limiter, timed: TimedClient, project: str) -> Timed:
    """reserve, settle: [µs of each, µs of the pair spent outside ``fcall``]."""
    held: list[Any] = []

    def reserve() -> None:
        held.append(lim.reserve(project, MODEL, tags=TAGS, **RESERVE))

    def settle() -> None:
        held.pop().settle(**SETTLE)

    two = _two(reserve, settle)

    def pair() -> list[float]:
        timed.inside = 0.0
        first, second = two()
        return [first, second, first + second - timed.inside * 1e6]

    return pair


def fcall_floor(client: Any, first: tuple[Any, ...], second: tuple[Any, ...]) -> Timed:
    return _two(
        lambda: client.fcall(NOOP_FUNCTION, *first), lambda: client.fcall(NOOP_FUNCTION, *second)
    )


def evalsha_floor(noop: Any, first: tuple[Any, ...], second: tuple[Any, ...]) -> Timed:
    def call(shape: tuple[Any, ...]) -> Callable[[], object]:
        k = shape[0]
        keys, args = list(shape[1 : 1 + k]), list(shape[1 + k :])
        return lambda: noop(keys=keys, args=args)

    return _two(call(first), call(second))


def limits_hits(window: MovingWindowRateLimiter, k: int) -> Timed:
    """``k`` moving-window hits (one script call each): [total µs, then each call's]."""
    items = [RateLimitItemPerMinute(10_000_000) for _ in range(k)]

    def hits() -> list[float]:
        out = []
        for j, item in enumerate(items):
            t0 = time.perf_counter()
            window.hit(item, "bench", str(j))
            out.append((time.perf_counter() - t0) * 1e6)
        return [sum(out), *out]

    return hits


def _config(n: int, samples: dict[str, list[list[float]]], shape: dict[str, Any]) -> Any:
    b, r = mix(n)
    row: dict[str, Any] = {"budgets": b, "rate_limits": r}
    for kind in ("ours", "noop-fcall", "noop-evalsha"):
        first, second = samples[f"{kind} {n}"][:2]
        pairs = [a + c for a, c in zip(first, second, strict=True)]
        names = ("reserve", "settle") if kind == "ours" else ("first", "second")
        row[kind] = {"pair": summary(pairs), names[0]: summary(first), names[1]: summary(second)}
    row["ours_python_outside_fcall"] = summary(samples[f"ours {n}"][2])
    ours_pair = row["ours"]["pair"]
    row["ratio_fcall_p50"] = ours_pair["p50_us"] / row["noop-fcall"]["pair"]["p50_us"]
    row["ratio_evalsha_p50"] = ours_pair["p50_us"] / row["noop-evalsha"]["pair"]["p50_us"]
    row["ratio_fcall_p99"] = ours_pair["p99_us"] / row["noop-fcall"]["pair"]["p99_us"]
    row["reserve_argv"] = len(shape["reserve"]) - 1 - shape["reserve"][0]
    row["settle_argv"] = len(shape["settle"]) - 1 - shape["settle"][0]
    return row


def run(iterations: int, warmup: int, counts: Sequence[int]) -> dict[str, Any]:
    with private_server() as url:
        lim = Limiter.from_url(url)
        projects = {f"l{n}": n for n in counts}
        lim.apply_policy(policy(projects))
        client = lim.client
        load_noop(client)
        evalsha = client.register_script(NOOP_SCRIPT)
        variants: dict[str, Timed] = {}
        timed = TimedClient(client)
        ours_lim = Limiter(timed)  # the same client, so the same pool, timeouts and server
        shapes = {}
        for project, n in projects.items():
            shape = shapes[n] = call_shapes(url, project)
            variants[f"ours {n}"] = ours(ours_lim, timed, project)
            variants[f"noop-fcall {n}"] = fcall_floor(client, shape["reserve"], shape["settle"])
            variants[f"noop-evalsha {n}"] = evalsha_floor(
                evalsha, shape["reserve"], shape["settle"]
            )
        window = MovingWindowRateLimiter(RedisStorage(url))
        variants["limits-hit 1"] = limits_hits(window, 1)
        variants["limits-hit 3"] = limits_hits(window, 3)
        progress(f"latency: {len(variants)} variants x {iterations} iterations")
        samples = interleave(variants, iterations, warmup)
        report = {
            "benchmark": "latency",
            "iterations": iterations,
            "environment": environment(client),
            "configs": {str(n): _config(n, samples, shapes[n]) for n in counts},
            "limits_library": {
                "version": _limits_version(),
                "strategy": "MovingWindowRateLimiter on RedisStorage (EVALSHA)",
                "hit_1": summary(samples["limits-hit 1"][0]),
                "hit_3": summary(samples["limits-hit 3"][0]),
            },
        }
        lim.close()
    return report


def _limits_version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version("limits")


def render(report: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for n, row in report["configs"].items():
        label = f"{n} ({row['budgets']}b+{row['rate_limits']}r)"
        for kind, name in (
            ("ours", "reserve+settle"),
            ("noop-fcall", "2 no-op FCALL"),
            ("noop-evalsha", "2 no-op EVALSHA"),
        ):
            s = row[kind]
            parts = list(s.values())
            rows.append(
                [
                    f"{label} {name}",
                    s["pair"]["p50_us"],
                    s["pair"]["p99_us"],
                    parts[1]["p50_us"],
                    parts[1]["p99_us"],
                    parts[2]["p50_us"],
                    parts[2]["p99_us"],
                ]
            )
    lib = report["limits_library"]
    rows.append(["limits hit x1", lib["hit_1"]["p50_us"], lib["hit_1"]["p99_us"], "", "", "", ""])
    rows.append(["limits hit x3", lib["hit_3"]["p50_us"], lib["hit_3"]["p99_us"], "", "", "", ""])
    heads = ["limits / variant (us)", "pair p50", "p99", "1st p50", "p99", "2nd p50", "p99"]
    ratios = [
        [
            f"{n} limits",
            row["ratio_fcall_p50"],
            row["ratio_evalsha_p50"],
            row["ratio_fcall_p99"],
            row["ours_python_outside_fcall"]["p50_us"],
            row["reserve_argv"],
            row["settle_argv"],
        ]
        for n, row in report["configs"].items()
    ]
    return "\n".join(
        [
            header(report),
            f"{report['iterations']} iterations per variant, interleaved",
            "",
            table(heads, rows),
            "",
            table(
                [
                    "ours / floor",
                    "p50 vs FCALL",
                    "p50 vs EVALSHA",
                    "p99 vs FCALL",
                    "Python p50 us",
                    "reserve ARGV",
                    "settle ARGV",
                ],
                ratios,
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 3, 4, 10])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.iterations, args.warmup, args.limits), args.json, render)


if __name__ == "__main__":
    main()
