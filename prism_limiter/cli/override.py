"""``override grant|revoke|list``: approved, audited, expiring raises of a budget's cap."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from prism_limiter.cli._common import (
    OK,
    check_name,
    command,
    json_flag,
    limiter,
    out,
    seconds,
    usd,
    write_json,
)
from prism_limiter.engine._records import Override


def register(sub: Any) -> None:
    group = sub.add_parser(
        "override",
        help="grant, revoke and list budget overrides",
        description="Grant, revoke and list overrides: expiring, audited raises of one budget"
        " instance's cap, asked for by one person and approved by another (see Overrides in"
        " the README).",
    )
    cmds = group.add_subparsers(dest="override_command", required=True, metavar="COMMAND")
    p = command(cmds, "grant", grant, "raise one budget instance's cap by --usd for --ttl")
    _target(p)
    p.add_argument("--usd", type=float, required=True, help="the extra cap in USD")
    p.add_argument("--ttl", type=seconds, required=True, help="how long: 3600, 90m, 12h, 7d")
    p.add_argument("--requested-by", required=True, help="who asked for it (audited)")
    p.add_argument("--approved-by", required=True, help="who approved it: someone else (audited)")
    p.add_argument("--reason", required=True, help="why (audited)")
    json_flag(p, "the override")
    p = command(cmds, "revoke", revoke, "end an override now")
    _target(p)
    p.add_argument("--actor", required=True, help="who revokes it (audited)")
    p.add_argument("--reason", required=True, help="why (audited)")
    json_flag(p, "the outcome")
    p = command(cmds, "list", list_, "the overrides in force (all projects when none is named)")
    p.add_argument("project", nargs="?", metavar="PROJECT")
    p.add_argument("--ended", action="store_true", help="include ended ones still kept")
    json_flag(p)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("budget", metavar="BUDGET")
    p.add_argument("--split", dest="split_value", help="the split value (split budgets)")


def grant(args: argparse.Namespace) -> int:
    with limiter(args) as lim:
        granted = lim.grant_override(
            args.project,
            args.budget,
            usd=args.usd,
            ttl_s=args.ttl,
            requested_by=args.requested_by,
            approved_by=args.approved_by,
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
            f" {granted.expires_at:%Y-%m-%d %H:%M:%S} UTC (requested by {granted.requested_by},"
            f" approved by {granted.approved_by})"
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


def list_(args: argparse.Namespace) -> int:
    found: list[Override] = []
    with limiter(args) as lim:
        projects = [check_name("project", args.project)] if args.project else lim.projects()
        for project in projects:
            found += [o for o in lim.list_overrides(project) if o.state == "active" or args.ended]
    if args.json:
        write_json({"overrides": [o.to_dict() for o in found]})
        return OK
    if not found:
        out().print("no overrides in force")
        return OK
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for head in ("project", "budget", "extra", "until (UTC)", "left", "asked / approved", "why"):
        table.add_column(head, justify="right" if head == "extra" else "left", no_wrap=True)
    now = datetime.now(UTC)
    for o in found:
        table.add_row(
            Text(o.project),
            Text(o.budget + (f" [{o.split_value}]" if o.split_value else "")),
            usd(o.extra_usd, 2),
            f"{o.expires_at:%Y-%m-%d %H:%M}",
            _left((o.expires_at - now).total_seconds()) if o.state == "active" else o.state,
            Text(f"{o.requested_by} / {o.approved_by}"),
            Text(o.reason),
        )
    out().print(table)
    return OK


def _left(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    return f"{max(s, 0) / 60:.0f}m"
