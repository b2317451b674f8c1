"""What the benchmarks share: the checkout under test, policies, floors, timing and reports.

Every benchmark measures the ``prism_limiter`` of the checkout it lives in (this file puts the
checkout first on ``sys.path``, whatever is installed), on a private ``redis-server`` it starts
on a free loopback port, and prints each figure next to a baseline measured in the same run.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import structlog  # noqa: E402

import prism_limiter  # noqa: E402
from prism_limiter import Limiter, Policy  # noqa: E402
from prism_limiter.engine._devserver import redis_server  # noqa: E402

# The library's log lines go to stderr: stdout holds the table or the --json document only.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

MODEL = "gpt-4o-mini"
TAGS = {"customer": "org:42", "team": "growth", "feature": "chat"}
RESERVE: dict[str, Any] = {"est_tokens": 1200, "max_output_tokens": 400}
SETTLE: dict[str, int] = {"input_tokens": 1187, "output_tokens": 212, "cache_read_tokens": 1024}
BIG_USD = 1_000_000  # caps no benchmark reaches: every reserve is allowed

NOOP_LIBRARY = (
    "#!lua name=prism_bench\n"
    "redis.register_function('prism_bench_noop', function(keys, args) return 1 end)\n"
)
NOOP_FUNCTION = "prism_bench_noop"
NOOP_SCRIPT = "return 1"


# -- policies -------------------------------------------------------------------------------


def mix(limits: int) -> tuple[int, int]:
    """(budgets, rate limits) for ``limits`` matching limits: a third are rate limits.

    1 -> (1, 0), 3 -> (2, 1), 4 -> (3, 1), 5 -> (4, 1), 10 -> (7, 3), 20 -> (14, 6).
    """
    rates = limits // 3
    return limits - rates, rates


_PERIODS = ("month", "day", "week", "quarter", "year")


def project_toml(
    project: str, budgets: int, rate_limits: int, *, section: str | None = None
) -> str:
    """One project's policy whose every budget and rate limit matches :data:`TAGS` requests.

    Budget 0 is project-wide per month, budget 1 is split by ``customer`` (per day), budget 2 is
    daily; the rest cycle through a ``where`` on a tag, a model glob and a split by ``team``, on
    varying periods. Rate limit 0 is rpm + tpm, 1 is a concurrency cap, 2 is split by ``team``,
    the rest cycle. Every cap is far above what a benchmark spends.
    """
    head = section or f"projects.{project}"
    lines = [f"[{head}]", f'allow_models = ["{MODEL}", "gpt-4o*"]']
    for i in range(budgets):
        lines += [f"[[{head}.budgets]]"]
        if i == 0:
            lines += ['id = "monthly"', f"usd = {BIG_USD}"]
        elif i == 1:
            lines += ['id = "per-customer"', "usd = 100000", 'period = "day"']
            lines += ['split_by = "customer"']
        elif i == 2:
            lines += ['id = "daily"', f"usd = {BIG_USD}", 'period = "day"']
        else:
            lines += [f'id = "b{i}"', f"usd = {BIG_USD}", f'period = "{_PERIODS[i % 5]}"']
            kind = i % 3
            if kind == 0:
                lines += ['where = { feature = "chat" }']
            elif kind == 1:
                lines += ['models = ["gpt-4o*"]', "warn_at = [0.5, 0.8, 0.95]"]
            else:
                lines += ['split_by = "team"']
    for j in range(rate_limits):
        lines += [f"[[{head}.rate_limits]]", f'id = "r{j}"']
        kind = j % 3
        if kind == 0:
            lines += ["rpm = 1000000000", "tpm = 1000000000"]
        elif kind == 1:
            lines += ["max_concurrent = 1000000"]
        else:
            lines += ["rpm = 1000000000", 'split_by = "team"']
    return "\n".join(lines) + "\n"


def policy(projects: dict[str, int]) -> Policy:
    """A policy of projects named after their number of matching limits (see :func:`mix`)."""
    return Policy.from_toml("\n".join(project_toml(p, *mix(n)) for p, n in projects.items()))


# -- the no-op floor ------------------------------------------------------------------------


class Recorder:
    """A sync client that forwards everything and keeps every ``FCALL`` with its reply, and
    every other command's reply (to find the exact KEYS/ARGV a script gets, and to serve them
    again from memory)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.fcalls: list[tuple[str, tuple[Any, ...], Any]] = []
        self.commands: dict[tuple[Any, ...], Any] = {}

    def fcall(self, function: str, numkeys: int, *rest: Any) -> Any:
        reply = self._client.fcall(function, numkeys, *rest)
        self.fcalls.append((function, (numkeys, *rest), reply))
        return reply

    def execute_command(self, *args: Any) -> Any:
        reply = self._client.execute_command(*args)
        self.commands[args] = reply
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def script(function: str) -> str:
    """``prism_<digest>_reserve`` -> ``reserve``."""
    return function.rsplit("_", 1)[1]


def call_shapes(url: str, project: str) -> dict[str, tuple[Any, ...]]:
    """The exact ``(numkeys, *KEYS, *ARGV)`` of one reserve, settle and release of ``project``
    (the policy must be applied), recorded from real calls on a separate project state."""
    rec = Recorder(redis.Redis.from_url(url, socket_timeout=5))
    lim = Limiter(rec)
    lim.reserve(project, MODEL, tags=TAGS, **RESERVE).settle(**SETTLE)
    lim.reserve(project, MODEL, tags=TAGS, **RESERVE).release()
    shapes = {script(f): args for f, args, _ in rec.fcalls}
    lim.close()
    return shapes


def load_noop(client: Any) -> None:
    client.function_load(NOOP_LIBRARY, replace=True)


# -- timing ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(samples_us: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies in microseconds."""
    return {
        "p50_us": percentile(samples_us, 0.50),
        "p99_us": percentile(samples_us, 0.99),
        "mean_us": statistics.fmean(samples_us) if samples_us else float("nan"),
        "n": float(len(samples_us)),
    }


def interleave(
    variants: Mapping[str, Callable[[], Sequence[float]]], iterations: int, warmup: int
) -> dict[str, list[list[float]]]:
    """Run every variant once per iteration, in an order that rotates, so drift and noise hit
    every variant alike. Each call returns the durations (µs) of the calls it timed; the result
    holds, per variant, one list of samples per timed call."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    out: dict[str, list[list[float]]] = {name: [] for name in names}
    gc.collect()
    for i in range(iterations):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            durations = variants[name]()
            if not out[name]:
                out[name] = [[] for _ in durations]
            for column, d in zip(out[name], durations, strict=True):
                column.append(d)
    return out


def us_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e6


# -- redis ----------------------------------------------------------------------------------


@contextmanager
def private_server(*extra: str) -> Iterator[str]:
    """A private redis-server on a free loopback port (never the one on 6379)."""
    with redis_server(*extra) as url:
        yield url


def command_stats(client: Any) -> dict[str, dict[str, float]]:
    """``INFO commandstats`` as ``{"fcall": {"calls": .., "usec": .., "usec_per_call": ..}}``."""
    raw = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v for k, v in raw.items()}


def fcall_usec(client: Any) -> tuple[int, float]:
    """(calls, total µs) of FCALL since the last ``CONFIG RESETSTAT``."""
    stat = command_stats(client).get("fcall", {"calls": 0, "usec": 0})
    return int(stat["calls"]), float(stat["usec"])


# -- the record -----------------------------------------------------------------------------


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(
            ["lscpu"], check=False, capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor"):
            fields[key.strip()] = value.strip()
    return fields


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def environment(client: Any) -> dict[str, Any]:
    """What the figures were measured on: the machine, the package, the server."""
    return {
        "nproc": os.cpu_count(),
        "cpu": _lscpu(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "prism_limiter": str(Path(prism_limiter.__file__).parent),
        "commit": _git_head(),
        "redis_info_server": dict(client.info("server")),
    }


def emit(report: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print the report as JSON (``--json``) or as the benchmark's table."""
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))


def header(report: dict[str, Any]) -> str:
    env = report["environment"]
    info = env["redis_info_server"]
    return (
        f"redis {info.get('redis_version')} ({info.get('multiplexing_api')}), "
        f"{env['nproc']} cores {env['cpu'].get('Model name', '')}, "
        f"load {env['loadavg'][0]:.2f}, prism_limiter {env['commit']}, loopback"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        parts = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def progress(message: str) -> None:
    """Progress goes to stderr, so ``--json`` output stays one document."""
    print(message, file=sys.stderr, flush=True)
