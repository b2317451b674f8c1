"""``status [PROJECT]``: every budget instance with its bar, reset time and warnings."""

from __future__ import annotations

import argparse
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich import box
from rich.table import Table
from rich.text import Text

from prism_limiter.cli._bars import budget_bar
from prism_limiter.cli._common import (
    FINDING,
    OK,
    check_name,
    command,
    json_flag,
    limiter,
    out,
    usd,
    write_json,
)
from prism_limiter.cli._stored import stored_policy
from prism_limiter.engine._money import NANO_PER_USD
from prism_limiter.engine._records import BudgetState, Override
from prism_limiter.policy._policy import BudgetPolicy, ProjectPolicy

HELP = """\
every budget instance of PROJECT (all projects when none is given): spent / held / remaining
of its cap as a bar, when it resets (in the budget's timezone), the warn thresholds its booked
spend passed, and the overrides in force. Exit 1 when a budget is past a warn threshold."""


def register(sub: Any) -> None:
    p = command(
        sub, "status", run, "every budget: spent, held, left, resets, warnings", description=HELP
    )
    p.add_argument("project", nargs="?", metavar="PROJECT")
    json_flag(p)


def passed(state: BudgetState, warn_at: tuple[float, ...]) -> tuple[float, ...]:
    """The thresholds booked spend reached, by the rule of ``budget.warn``: spent against the
    policy's cap (an override raises the cap a reserve may use, not the thresholds)."""
    base = round((state.cap_usd - state.override_usd) * NANO_PER_USD)
    spent = round(state.spent_usd * NANO_PER_USD)
    return tuple(f for f in sorted(warn_at) if spent >= math.ceil(base * f))


def _unused(budget: BudgetPolicy) -> BudgetState:
    """A budget of the policy with no instance yet (nothing reserved on it this period)."""
    return BudgetState(
        budget=budget.id, cap_usd=budget.usd, spent_usd=0.0, held_usd=0.0, remaining_usd=budget.usd
    )


def rows(
    states: list[BudgetState], policy: ProjectPolicy | None, live: list[Override]
) -> list[dict[str, Any]]:
    """One row per budget instance, with what the policy and overrides add to it."""
    budgets = {b.id: b for b in policy.budgets} if policy else {}
    seen = {s.budget for s in states}
    states = states + [_unused(b) for b in budgets.values() if b.id not in seen and not b.split_by]
    by_instance = {(o.budget, o.split_value): o for o in live if o.state == "active"}
    out = []
    for s in sorted(states, key=lambda s: (s.budget, s.split_value or "")):
        b = budgets.get(s.budget)
        zone = b.timezone if b else "UTC"
        row: dict[str, Any] = {"state": s, "timezone": zone, "warn_at": b.warn_at if b else ()}
        row["passed"] = passed(s, row["warn_at"])
        row["resets_local"] = s.resets_at.astimezone(ZoneInfo(zone)) if s.resets_at else None
        row["override"] = by_instance.get((s.budget, s.split_value))
        out.append(row)
    return out


def _json_row(project: str, row: dict[str, Any]) -> dict[str, Any]:
    s: BudgetState = row["state"]
    data = {"project": project, **s.to_dict(), "timezone": row["timezone"]}
    if row["resets_local"] is not None:
        data["resets_at_local"] = row["resets_local"].isoformat()
    data["warn_at"] = list(row["warn_at"])
    data["warn_passed"] = list(row["passed"])
    o: Override | None = row["override"]
    if o is not None:
        data["override"] = {"extra_usd": o.extra_usd, "until": o.expires_at.isoformat()}
    return data


def run(args: argparse.Namespace) -> int:
    with limiter(args) as lim:
        projects = [check_name("project", args.project)] if args.project else lim.projects()
        doc = stored_policy(lim.client, lim.namespace).policy
        report = []
        for project in projects:
            states = lim.status(project)
            live = lim.list_overrides(project)
            report.append((project, rows(states, doc.for_project(project), live)))
    finding = any(r["passed"] for _, rs in report for r in rs)
    if args.json:
        write_json({"budgets": [_json_row(p, r) for p, rs in report for r in rs]})
        return FINDING if finding else OK
    if not report:
        out().print("no projects in this namespace (apply a policy first)")
    for project, project_rows in report:
        render(project, project_rows)
    return FINDING if finding else OK


def _when(moment: datetime | None) -> str:
    """Periods start and end at local midnight: the day and the zone say it all."""
    return f"{moment:%Y-%m-%d %Z}" if moment else "never"


def _money(value: float) -> str:
    """Six places below a dollar (small caps matter), four above."""
    return usd(value, 4 if abs(value) >= 1 else 6)


def render(project: str, project_rows: list[dict[str, Any]]) -> None:
    console = out()
    if not project_rows:
        console.print(Text(f"{project}: no budgets"))
        return
    table = Table(
        title=Text(project, style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    names = [len(r["state"].budget) + len(r["state"].split_value or "") + 3 for r in project_rows]
    table.add_column("budget", min_width=min(max(names), 24))
    table.add_column("used", no_wrap=True)  # spent / held / left of the cap
    for name in ("spent", "held", "cap"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("resets")
    table.add_column("notes")
    live: list[str] = []
    for row in project_rows:
        s: BudgetState = row["state"]
        name = s.budget + (f" [{s.split_value}]" if s.split_value else "")
        notes = [f"past {f:.0%}" for f in row["passed"]]
        if s.spent_usd >= s.cap_usd > 0 or (s.cap_usd == 0 and s.spent_usd > 0):
            notes.append("at cap")
        o: Override | None = row["override"]
        if o is not None:
            notes.append("override")
            live.append(
                f"  override {name}: +{usd(o.extra_usd, 2)} (in the cap) until"
                f" {o.expires_at:%Y-%m-%d %H:%M} UTC"
            )
        table.add_row(
            Text(name),
            budget_bar(s.spent_usd, s.held_usd, s.cap_usd, row["warn_at"]),
            _money(s.spent_usd),
            _money(s.held_usd),
            usd(s.cap_usd, 2),
            _when(row["resets_local"]),
            Text(", ".join(notes) or "-"),
        )
    console.print(table)
    for line in live:
        console.print(Text(line))
