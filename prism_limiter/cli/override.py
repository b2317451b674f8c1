"""``override grant|revoke|list``: approved, audited, expiring raises of a budget's cap."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from prism_limiter._limiter import Limiter
from prism_limiter.cli._common import (
    OK,
    check_name,
    command,
    guarded,
    json_flag,
    limiter,
    out,
    seconds,
    text,
    usd,
    write_json,
)
from prism_limiter.cli._stored import StoredOverride, overrides

_SCAN = 5000  # audit entries searched for who granted an override


def register(sub: Any) -> None:
    group = sub.add_parser(
        "override",
        help="grant, revoke and list budget overrides",
        description="Grant, revoke and list overrides: expiring, audited raises of one budget"
        " instance's cap (see Overrides in the README).",
    )
    cmds = group.add_subparsers(dest="override_command", required=True, metavar="COMMAND")
    p = command(cmds, "grant", grant, "raise one budget instance's cap by --usd for --ttl")
    _target(p)
    p.add_argument("--usd", type=float, required=True, help="the extra cap in USD")
    p.add_argument("--ttl", type=seconds, required=True, help="how long: 3600, 90m, 12h, 7d")
    _approval(p)
    json_flag(p, "the override")
    p = command(cmds, "revoke", revoke, "end an override now")
    _target(p)
    _approval(p)
    json_flag(p, "the outcome")
    p = command(cmds, "list", list_, "the overrides in force (all projects when none is named)")
    p.add_argument("project", nargs="?", metavar="PROJECT")
    p.add_argument("--ended", action="store_true", help="include ended ones still stored")
    json_flag(p)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("budget", metavar="BUDGET")
    p.add_argument("--split", dest="split_value", help="the split value (split budgets)")


def _approval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", required=True, help="who approved it (audited)")
    p.add_argument("--reason", required=True, help="why (audited)")


def grant(args: argparse.Namespace) -> int:
    with limiter(args) as lim:
        granted = lim.grant_override(
            args.project,
            args.budget,
            usd=args.usd,
            ttl_s=args.ttl,
            actor=args.actor,
            reason=args.reason,
            split_value=args.split_value,
        )
    if args.json:
        write_json(granted.to_dict())
        return OK
    what = granted.budget + (f" [{granted.split_value}]" if granted.split_value else "")
    out().print(
        Text(
            f"granted {granted.project} {what}: +{usd(granted.extra_usd, 2)} until"
            f" {granted.expires_at:%Y-%m-%d %H:%M:%S} UTC (actor {granted.actor})"
        )
    )
    return OK


def revoke(args: argparse.Namespace) -> int:
    with limiter(args) as lim:
        had = lim.revoke_override(
            args.project,
            args.budget,
            actor=args.actor,
            reason=args.reason,
            split_value=args.split_value,
        )
    if args.json:
        write_json({"revoked": had})
    else:
        what = args.budget + (f" [{args.split_value}]" if args.split_value else "")
        message = "revoked" if had else "no override was in force for"
        out().print(Text(f"{message} {args.project} {what} (audited override.revoked)"))
    return OK


def _granted_by(lim: Limiter, project: str, o: StoredOverride) -> dict[str, str]:
    """The ``override.granted`` entry of this very grant (same budget, split and end)."""
    until = str(o.until_ms)
    raw = guarded(lim.client.xrevrange, lim.audit_key(project), "+", "-", count=_SCAN)
    for _, fields in raw:
        f = {text(k): text(v) for k, v in fields.items()}
        if (
            f.get("event") == "override.granted"
            and f.get("budget") == o.budget
            and (f.get("split") or None) == o.split_value
            and f.get("until_ms") == until
        ):
            return {"actor": f.get("actor", ""), "reason": f.get("reason", "")}
    return {}


def list_(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    with limiter(args) as lim:
        projects = [check_name("project", args.project)] if args.project else lim.projects()
        for project in projects:
            for o in overrides(lim.client, lim.namespace, project):
                if o.live or args.ended:
                    rows.append(
                        {
                            "project": project,
                            "budget": o.budget,
                            "split_value": o.split_value,
                            "extra_usd": o.extra_usd,
                            "until": f"{o.until:%Y-%m-%dT%H:%M:%SZ}",
                            "until_ms": o.until_ms,
                            "live": o.live,
                            **_granted_by(lim, project, o),
                        }
                    )
    if args.json:
        write_json({"overrides": rows})
        return OK
    if not rows:
        out().print("no overrides in force")
        return OK
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for head in ("project", "budget", "extra", "until (UTC)", "left", "actor", "reason"):
        table.add_column(head, justify="right" if head == "extra" else "left", no_wrap=True)
    now = datetime.now(UTC)
    for r in rows:
        until = datetime.fromtimestamp(r["until_ms"] / 1000, UTC)
        left = until - now
        table.add_row(
            Text(r["project"]),
            Text(r["budget"] + (f" [{r['split_value']}]" if r["split_value"] else "")),
            usd(r["extra_usd"], 2),
            f"{until:%Y-%m-%d %H:%M}",
            _left(left.total_seconds()) if r["live"] else "ended",
            Text(r.get("actor", "?")),
            Text(r.get("reason", "")),
        )
    out().print(table)
    return OK


def _left(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    return f"{max(s, 0) / 60:.0f}m"
