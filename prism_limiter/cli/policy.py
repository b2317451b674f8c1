"""``policy validate|diff|apply|show``: policy documents against the stored one."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

import msgspec
from rich.table import Table
from rich.text import Text

from prism_limiter.cli import _diff
from prism_limiter.cli._common import (
    FINDING,
    OK,
    check_name,
    command,
    json_flag,
    limiter,
    out,
    write_json,
)
from prism_limiter.cli._stored import stored_policy
from prism_limiter.policy._policy import Policy, ProjectPolicy

_MARK = {"added": "+", "removed": "-", "changed": "~"}


def register(sub: Any) -> None:
    group = sub.add_parser(
        "policy",
        help="validate, diff, apply and show policy documents",
        description="Validate, diff, apply and show policy documents (TOML, see the README).",
    )
    cmds = group.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    p = command(
        cmds,
        "validate",
        validate,
        "check a policy file (exit 2 with the error)",
        redis_options=False,
    )
    p.add_argument("file", metavar="FILE")
    json_flag(p, "the summary")
    p = command(cmds, "diff", diff, "what applying FILE would change, per project")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--prune", action="store_true", help="as `apply --prune` would")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when anything would change")
    json_flag(p, "the changes")
    p = command(cmds, "apply", apply, "store FILE as the next policy version")
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--prune",
        action="store_true",
        help="the file is the whole truth: projects it does not list lose their policy",
    )
    p.add_argument("--actor", default=None, help="who applies it (default: cli:$USER)")
    json_flag(p, "the change")
    p = command(cmds, "show", show, "the stored policy (one project's, or every project's)")
    p.add_argument("project", nargs="?", metavar="PROJECT")
    json_flag(p, "the stored document")


def validate(args: argparse.Namespace) -> int:
    policy = Policy.load(args.file)  # PolicyError: exit 2 with its message
    budgets = sum(len(p.budgets) for p in policy.projects.values())
    limits = sum(len(p.rate_limits) for p in policy.projects.values())
    if args.json:
        write_json(
            {
                "valid": True,
                "projects": sorted(policy.projects),
                "defaults": policy.defaults is not None,
                "budgets": budgets,
                "rate_limits": limits,
            }
        )
        return OK
    names = ", ".join(sorted(policy.projects)) or "none"
    out().print(
        f"ok: {args.file}: {len(policy.projects)} project(s) ({names}),"
        f" {budgets} budget(s), {limits} rate limit(s),"
        f" {'with' if policy.defaults else 'no'} [defaults]",
        markup=False,
    )
    return OK


def diff(args: argparse.Namespace) -> int:
    new = Policy.load(args.file)
    with limiter(args) as lim:
        stored = stored_policy(lim.client, lim.namespace)
    changes = _diff.diff(stored.policy, new, prune=args.prune)
    if args.json:
        write_json({"version": stored.version, "changes": [c.to_dict() for c in changes]})
    else:
        print_changes(changes, stored.version)
    return FINDING if args.exit_code and changes else OK


def print_changes(changes: list[_diff.Change], version: int) -> None:
    console = out()
    if not changes:
        console.print(f"no changes against the stored policy (version {version})")
        return
    console.print(f"against the stored policy (version {version}):")
    scope = None
    for c in changes:
        if c.scope != scope:
            scope = c.scope
            console.print(Text(scope, style="bold"))
        console.print(f"  {_MARK[c.kind]} {_describe(c)}", markup=False)
    kinds = {k: sum(c.kind == k for c in changes) for k in _MARK}
    console.print(", ".join(f"{n} {k}" for k, n in kinds.items()))


def _describe(c: _diff.Change) -> str:
    if c.kind == "changed":
        what = f"{c.item}: {c.field}" if c.field else c.item
        return f"{what} {_value(c.before)} -> {_value(c.after)}"
    if c.item == "project" and c.after:
        return f"project ({c.after})"
    detail = c.after if c.kind == "added" else c.before
    if detail is None:
        return c.item
    if c.item in ("allow_models", "deny_models"):
        return f"{c.item} {detail!r}"
    return f"{c.item}: {detail}"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if value else "''"
    return str(value)


def apply(args: argparse.Namespace) -> int:
    new = Policy.load(args.file)
    actor = args.actor or f"cli:{_user()}"
    with limiter(args) as lim:
        stored = stored_policy(lim.client, lim.namespace)
        changes = _diff.diff(stored.policy, new, prune=args.prune)
        change = lim.apply_policy(new, actor=actor, prune=args.prune)
    if args.json:
        data = msgspec.to_builtins(change)
        data["changes"] = [c.to_dict() for c in changes]
        write_json(data)
        return OK
    print_changes(changes, stored.version)
    console = out()
    console.print(f"applied policy version {change.version} (actor {actor})", markup=False)
    if change.projects:
        console.print("stored for: " + ", ".join(change.projects), markup=False)
    if change.removed:
        console.print("removed: " + ", ".join(change.removed), markup=False)
    return OK


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        return "unknown"


def show(args: argparse.Namespace) -> int:
    project = check_name("project", args.project) if args.project else None
    with limiter(args) as lim:
        stored = stored_policy(lim.client, lim.namespace)
    doc = stored.policy
    if project is not None:
        scoped = doc.for_project(project)
        source = "listed" if project in doc.projects else "[defaults]" if scoped else None
        if args.json:
            part = msgspec.to_builtins(scoped) if scoped else None
            write_json(
                {"version": stored.version, "project": project, "source": source, "policy": part}
            )
        elif scoped is None:
            out().print(
                f"project {project!r} has no policy (and there are no [defaults])", markup=False
            )
        else:
            _header(stored.version, stored.actor, stored.applied_at)
            render_project(project + (" (from [defaults])" if source != "listed" else ""), scoped)
        return OK if scoped is not None else FINDING
    if args.json:
        write_json(
            {
                "version": stored.version,
                "actor": stored.actor,
                "applied_at": stored.applied_at,
                "document": msgspec.to_builtins(doc),
            }
        )
        return OK
    if stored.version == 0:
        out().print("no policy stored in this namespace")
        return OK
    _header(stored.version, stored.actor, stored.applied_at)
    for name in sorted(doc.projects):
        render_project(name, doc.projects[name])
    if doc.defaults is not None:
        render_project("[defaults]", doc.defaults)
    return OK


def _header(version: int, actor: str | None, when: Any) -> None:
    at = f" at {when:%Y-%m-%d %H:%M:%S} UTC" if when else ""
    out().print(f"policy version {version}, applied by {actor or '?'}{at}", markup=False)


def render_project(title: str, p: ProjectPolicy) -> None:
    console = out()
    console.print(Text("\n" + title, style="bold"))
    console.print(f"  allow: {', '.join(p.allow_models) or '(nothing)'}", markup=False)
    console.print(f"  deny:  {', '.join(p.deny_models) or '-'}", markup=False)
    console.print(
        f"  default_max_output_tokens {p.default_max_output_tokens}, on_unknown_price"
        f" {p.on_unknown_price}, hold_ttl_s {p.hold_ttl_s:g}"
        + (f", provider {p.provider}" if p.provider else ""),
        markup=False,
    )
    if p.budgets:
        table = Table("budget", "cap", "period", "timezone", "warn at", "scope", title=None)
        for b in p.budgets:
            scope = _diff.summary(b).partition(")")[2].lstrip(", ") or "-"
            warn = ", ".join(f"{f:.0%}" for f in b.warn_at) or "-"
            table.add_row(b.id, f"${b.usd:,.2f}", b.period, b.timezone, warn, Text(scope))
        console.print(table)
    for r in p.rate_limits:
        console.print(f"  rate limit {r.id}: {_diff.summary(r)}", markup=False)
    for model, price in sorted(p.prices.items()):
        console.print(f"  price {model}: {_diff.summary(price)} (USD/MTok)", markup=False)
