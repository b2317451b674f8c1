"""Where a script's server time goes, stage by stage: the shipped Lua, instrumented.

The Lua VM inside Redis has no profiler and no clock but ``TIME`` (1 µs resolution, about
half a µs a call), so this loads the shipped library a second time, under another name, with
a mark after each stage of ``reserve`` and ``settle`` (a line of the source, found by a
pattern); each mark adds the µs since the previous one to its stage, kept in the library's
upvalues across calls. Over thousands of calls the 1 µs quantisation averages out; the cost
of a mark itself is measured the same way (two marks in a row) and reported, not hidden. The
workload is the goal's request (3 budgets, one split by customer, and 1 rate limit) or
``--limits``, a reserve then a settle of each, against a private redis-server. A pattern that
no longer matches the source is reported as missing, never guessed.

    python benchmarks/lua_profile.py [--limits 4] [--calls 2000] [--json]
"""

from __future__ import annotations

import argparse
import re
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
    policy,
    private_server,
    progress,
    table,
)

from prism_limiter import Limiter
from prism_limiter.engine import _scripts

LIBRARY = "prism_bench_profile"

_MARKS_LUA = """
local BENCH_T, BENCH_US, BENCH_N = 0, {}, {}
local function bench_mark(stage)
  local t = redis.call('TIME')
  local now = t[1] * 1000000 + t[2]
  if stage ~= '' then
    BENCH_US[stage] = (BENCH_US[stage] or 0) + now - BENCH_T
    BENCH_N[stage] = (BENCH_N[stage] or 0) + 1
  end
  BENCH_T = now
end
local function bench_dump()
  local out = {}
  for stage, us in pairs(BENCH_US) do
    out[#out + 1], out[#out + 2], out[#out + 3] = stage, tostring(us), tostring(BENCH_N[stage])
  end
  BENCH_US, BENCH_N = {}, {}
  return out
end
local function bench_two_marks() bench_mark('') bench_mark('(one mark)') return 1 end
"""

# Per script: (a pattern of the line a stage ends on, the stage's name); a mark goes right
# after that line. The stages run in this order on the common path (an allowed reserve, a
# settle of a live hold); a stage of None only moves the search past a line.
STAGES: dict[str, list[tuple[str, str | None]]] = {
    "reserve": [
        (r"^  begin\(keys, argv\)$", "begin: context, TIME, usage day"),
        (r"^    return \{'badargs', 'reserve'\}$", None),
        (r"^  end$", "arguments"),
        (r"^  local inst, bad = instances\(", "instances"),
        (r"^  local over, overridden, kinds, retries = ", "per-call tables"),
        (r"^  local pv = redis.call\('HMGET', K_POLICY, 'v', 'due'\)$", "policy version"),
        (r"^  local existing = redis.call\('HGET', K_HOLDS, rid\)$", "idempotency lookup"),
        (r"^  local due = int\(pv\[2\]\) or 0$", None),
        (r"^  local bviews, rviews = load\(", "load: HMGET, views"),
        (r"^  local reply = \{'ok'", "budget and rate checks"),
        (r"^  reply\[#reply \+ 1\] = #shadowed$", "reply, overrides"),
        (r"^  store\(bviews, rtaken, more\)$", "store: HSET budgets"),
        (r"^  W\('HSET', K_HOLDS, rid, rec\)$", "record: format, HSET"),
        (r"^  W\('ZADD', K_LEASES, deadline, rid\)$", "lease: ZADD"),
    ],
    "settle": [
        (r"^  begin\(keys, argv\)$", "begin: context, TIME, usage day"),
        (r"^  local raw = redis.call\('HGET', K_HOLDS, rid\)$", "arguments, record HGET"),
        (r"^  local rec = rec_decode\(raw\)$", "record decode"),
        (r"^  local bviews, rviews = load_record\(rec\)$", "load: HMGET, views"),
        (r"for _, view in ipairs\(bviews\) do budget_post\(view, hold, cost", "budget posts"),
        (r"^    store\(bviews, rviews\)$", "store: HSET budgets"),
        (r"^    book_usage\(dims, cost, 1, ", "attribution"),
        (r"^    rec_finish\(rid, rec, final, cost\)$", "record: HSET, ZREM, ZADD"),
    ],
}


def instrument(code: str) -> tuple[str, list[str]]:
    """The library code with marks after each stage; the stages whose line was not found."""
    out: list[str] = []
    current: str | None = None
    pending: list[tuple[str, str | None]] = []
    for line in code.split("\n"):
        start = re.match(r"^local function (\w+)\(keys, argv\)$", line)
        if start and start.group(1) in STAGES:
            current, pending = start.group(1), list(STAGES[start.group(1)])
            out += [line, "  bench_mark('')"]
            continue
        if line == "end":
            current = None
        out.append(line)
        if current and pending and re.search(pending[0][0], line):
            _, stage = pending.pop(0)
            if stage:
                out.append(f"  bench_mark({f'{current}: {stage}'!r})")
    found = set(re.findall(r"bench_mark\('([^']+)'\)", "\n".join(out)))
    wanted = [f"{script}: {n}" for script, st in STAGES.items() for _, n in st if n]
    missing = [w for w in wanted if w not in found]
    return "\n".join(out), missing


def profile_library() -> tuple[str, list[str]]:
    name, code = _scripts.library()
    rest = code.split("\n", 1)[1]  # without the shebang: this library has its own name
    body, missing = instrument(rest.replace(f"'{name}_", f"'{LIBRARY}_"))
    extra = (
        f"redis.register_function('{LIBRARY}_dump', function() return bench_dump() end)\n"
        f"redis.register_function('{LIBRARY}_two_marks', function() return bench_two_marks() end)\n"
    )
    return f"#!lua name={LIBRARY}\n{_MARKS_LUA}{body}\n{extra}", missing


def run(limits: int, calls: int) -> dict[str, Any]:
    code, missing = profile_library()
    with private_server() as url:
        lim = Limiter.from_url(url)
        lim.apply_policy(policy({"p": limits}))
        client = lim.client
        client.function_load(code, replace=True)
        shipped = _scripts.function_name

        def fcalls(limiter: Limiter, n: int) -> tuple[float, float]:
            client.config_resetstat()
            held = [limiter.reserve("p", MODEL, tags=TAGS, **RESERVE) for _ in range(n)]
            r_calls, r_usec = fcall_usec(client)
            for r in held:
                r.settle(**SETTLE)
            s_calls, s_usec = fcall_usec(client)
            return r_usec / r_calls, (s_usec - r_usec) / (s_calls - r_calls - 1)

        progress(f"lua profile: {limits} limits, {calls} reserves and settles")
        fcalls(lim, 200)  # warm up: instances exist, caches are full
        plain_us = fcalls(lim, calls)
        # The same limiter, its scripts called in the instrumented copy.
        _scripts.function_name = lambda name: f"{LIBRARY}_{name}"
        try:
            fcalls(lim, 200)
            client.fcall(f"{LIBRARY}_dump", 0)
            marked_us = fcalls(lim, calls)
            raw = client.fcall(f"{LIBRARY}_dump", 0)
            for _ in range(calls):
                client.fcall(f"{LIBRARY}_two_marks", 0)
            one = client.fcall(f"{LIBRARY}_dump", 0)
        finally:
            _scripts.function_name = shipped
        stages = {raw[i].decode(): int(raw[i + 1]) / int(raw[i + 2]) for i in range(0, len(raw), 3)}
        mark_us = int(one[1]) / int(one[2])
        scripts: dict[str, Any] = {}
        report = {
            "benchmark": "lua_profile",
            "limits": limits,
            "calls": calls,
            "environment": environment(client),
            "missing_marks": missing,
            "mark_us": mark_us,
            "scripts": scripts,
        }
        for i, script in enumerate(STAGES):
            rows = [
                {"stage": n, "us": stages.get(f"{script}: {n}")} for _, n in STAGES[script] if n
            ]
            scripts[script] = {
                "fcall_us": plain_us[i],
                "fcall_us_instrumented": marked_us[i],
                "stages": rows,
            }
        lim.close()
    return report


def render(report: dict[str, Any]) -> str:
    parts = [header(report), f"{report['limits']} limits, {report['calls']} calls"]
    for script, r in report["scripts"].items():
        marks = sum(1 for s in r["stages"] if s["us"] is not None)
        rows = [
            [
                s["stage"],
                s["us"] if s["us"] is not None else float("nan"),
                max(0.0, s["us"] - report["mark_us"]) if s["us"] is not None else float("nan"),
            ]
            for s in r["stages"]
        ]
        parts += [
            "",
            f"{script}: {r['fcall_us']:.1f} us per call as shipped,"
            f" {r['fcall_us_instrumented']:.1f} us with {marks} marks",
            table([f"{script} stage", "us", "us less one mark"], rows),
        ]
    parts.append(f"\none mark (a TIME call and two table updates): {report['mark_us']:.2f} us")
    if report["missing_marks"]:
        parts.append("marks not placed (the source changed): " + ", ".join(report["missing_marks"]))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--limits", type=int, default=4, help="matching limits (see mix())")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    emit(run(args.limits, args.calls), args.json, render)


if __name__ == "__main__":
    main()
