"""``report PROJECT --by model|tag:<key>|day``: spend and unit economics from the usage counters."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from prism_limiter.cli import _reportmath as rm
from prism_limiter.cli._common import (
    FINDING,
    OK,
    UsageError,
    check_name,
    command,
    day,
    limiter,
    write_json,
)
from prism_limiter.cli._report_table import render
from prism_limiter.cli._stored import stored_policy
from prism_limiter.engine._limiter import Limiter
from prism_limiter.engine._records import UNTAGGED
from prism_limiter.policy._rules import ProjectRules

HELP = """\
spend of PROJECT per model, per value of one tag (--by tag:feature) or per UTC day, from the
usage counters: requests, tokens, cost per request and per 1k tokens, cache hit ratio (cache
read / input) and the dollars the cache saved; the burn rate, and for every budget the date
its cap runs out at the rate of its period so far. The range defaults to this month (UTC)."""

CSV_FIELDS = (
    "key",
    "cost_usd",
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "expired_holds",
    "cost_per_request_usd",
    "cost_per_1k_tokens_usd",
    "cache_hit_ratio",
    "cache_saved_usd",
)


def register(sub: Any) -> None:
    p = command(
        sub,
        "report",
        run,
        "spend per model, tag or day: unit costs, cache savings, burn rate",
        description=HELP,
    )
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--by", default="model", type=_by, help="model (default), tag:<key> or day")
    p.add_argument("--from", dest="start", type=day, help="first UTC day (default: the 1st)")
    p.add_argument("--to", dest="end", type=day, help="last UTC day, inclusive (default: today)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--json", action="store_true", help="the same as --format json")


def _by(value: str) -> str:
    if value in ("model", "day") or (value.startswith("tag:") and len(value) > 4):
        return value
    raise argparse.ArgumentTypeError(f"expected model, day or tag:<key>, got {value!r}")


def build(
    lim: Limiter, project: str, by: str, first: date, last: date, *, now: datetime
) -> rm.Report:
    """Every row of the report, the total and the burn figures (usage read from Redis)."""
    policy = stored_policy(lim.client, lim.namespace).policy.for_project(project)
    rules = ProjectRules(project, policy, 0)
    whole = lim.usage(project, first, last)

    def saved(by_model: dict[str, Any]) -> float | None:
        amounts = [
            rm.cache_saved_usd(r.cache_read_tokens, rules.model(m, None, stored=True).price)
            for m, r in by_model.items()
        ]
        return None if None in amounts else sum(a for a in amounts if a is not None)

    if by == "model":
        rows = [rm.Row(m, r, saved({m: r})) for m, r in whole.by_model.items()]
    elif by == "day":
        rows = []
        for n in range((last - first).days + 1):
            one = lim.usage(project, first + timedelta(days=n))
            rows.append(
                rm.Row((first + timedelta(days=n)).isoformat(), one.total, saved(one.by_model))
            )
    else:
        key = by[4:]
        values = whole.by_tag.get(key) or ({UNTAGGED: whole.total} if whole.total.requests else {})
        rows = [
            rm.Row(v if v != UNTAGGED else rm.UNTAGGED_LABEL, r, None) for v, r in values.items()
        ]
    if by != "day":
        rows.sort(key=lambda r: (-r.usage.cost_usd, r.key))
    total = rm.Row("total", whole.total, saved(whole.by_model))
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    zones = {b.id: b.timezone for b in policy.budgets} if policy else {}
    budgets = [
        rm.BudgetBurn(
            s,
            rm.burn(s.spent_usd, s.cap_usd, s.period_start, s.resets_at, now),
            zones.get(s.budget, "UTC"),
        )
        for s in lim.status(project)
    ]
    return rm.Report(
        project=project,
        by=by,
        first=first,
        last=last,
        rows=rows,
        total=total,
        adds_up=rm.sums_to(rows, whole.total),
        usd_per_day=rm.period_rate(whole.total.cost_usd, start, end, now),
        budgets=budgets,
        now=now,
    )


def run(args: argparse.Namespace) -> int:
    project = check_name("project", args.project)
    now = datetime.now(UTC)
    last = args.end or now.date()
    first = args.start or last.replace(day=1)
    if first > last:
        raise UsageError(f"--from ({first}) is after --to ({last})")
    with limiter(args) as lim:
        report = build(lim, project, args.by, first, last, now=now)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        write_json(as_json(report))
    elif fmt == "csv":
        write_csv(report)
    else:
        render(report)
    return OK if report.adds_up else FINDING


def as_json(report: rm.Report) -> dict[str, Any]:
    return {
        "project": report.project,
        "by": report.by,
        "from": report.first.isoformat(),
        "to": report.last.isoformat(),
        "rows": [r.to_dict() for r in report.rows],
        "total": report.total.to_dict(),
        "rows_add_up": report.adds_up,
        "burn_usd_per_day": report.usd_per_day,
        "budgets": [
            {
                **b.state.to_dict(),
                "burn_usd_per_day": b.burn.usd_per_day if b.burn else None,
                "forecast_usd": b.burn.forecast_usd if b.burn else None,
                "runs_out": b.burn.runs_out.isoformat() if b.burn and b.burn.runs_out else None,
            }
            for b in report.budgets
        ],
    }


def _plain(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.9f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def write_csv(report: rm.Report) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in report.rows:
        data = row.to_dict()
        writer.writerow([_plain(data.get(f)) for f in CSV_FIELDS])
