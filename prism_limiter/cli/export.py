"""``export focus --period YYYY-MM [PROJECT]``: a FinOps FOCUS 1.2 CSV of the usage counters."""

from __future__ import annotations

import argparse
import csv
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prism_limiter.cli import _focus
from prism_limiter.cli._common import OK, UsageError, check_name, command, limiter, month, output
from prism_limiter.engine._records import UsageReport
from prism_limiter.pricing._names import resolve
from prism_limiter.pricing._pricing import ModelPrice

FOCUS_HELP = """\
a FinOps FOCUS 1.2 cost and usage CSV for one month: a row per project x UTC day x model, with
every mandatory FOCUS column, ConsumedQuantity/ConsumedUnit in tokens, Tags as JSON, and the
custom x_ columns (project, model, requests, token counts, tag values) after them. BilledCost,
EffectiveCost and ContractedCost are the booked cost (negotiated prices where the policy has
them); ListCost is recomputed at the genai-prices list price from the day's tokens (base tier,
cache writes at the 5-minute rate: an approximation). Every project when none is named."""


def register(sub: Any) -> None:
    group = sub.add_parser(
        "export",
        help="export spend as FinOps FOCUS 1.2 CSV",
        description="Export spend for other tools.",
    )
    cmds = group.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    p = command(
        cmds, "focus", focus, "a FinOps FOCUS 1.2 CSV for one month", description=FOCUS_HELP
    )
    p.add_argument("project", nargs="?", metavar="PROJECT")
    p.add_argument("--period", type=month, required=True, help="the month, YYYY-MM (UTC)")
    p.add_argument("--output", "-o", help="write to this file (default: stdout)")
    p.add_argument("--billing-account-id", help="BillingAccountId (default: the namespace)")
    p.add_argument("--billing-account-name", help="BillingAccountName (default: the id)")
    p.add_argument("--invoice-issuer", help="InvoiceIssuerName (default: each row's provider)")


def days_of(first: date, today: date) -> list[date]:
    """The month's UTC days up to today (none of a month that has not begun)."""
    end = min(_focus.next_month(first), today + timedelta(days=1))
    return [first + timedelta(days=n) for n in range((end - first).days)]


def focus(args: argparse.Namespace) -> int:
    first: date = args.period
    days = days_of(first, datetime.now(UTC).date())
    if not days:
        raise UsageError(f"{first:%Y-%m} has not begun")
    account_id = args.billing_account_id or args.namespace
    account = _focus.Account(
        id=account_id,
        name=args.billing_account_name or account_id,
        invoice_issuer=args.invoice_issuer,
    )
    with limiter(args) as lim:
        projects = [check_name("project", args.project)] if args.project else lim.projects()
        usage: list[tuple[str, date, UsageReport]] = []
        for project in projects:
            usage += [(project, day, lim.usage(project, day)) for day in days]
    tag_keys = tuple(sorted({k for _, _, r in usage for k in _focus.day_tags(r)}))
    with output(args.output) as sink:
        writer = csv.DictWriter(sink, fieldnames=_focus.columns(tag_keys), lineterminator="\n")
        writer.writeheader()
        for project, day, report in usage:
            for row in _focus.rows(
                project,
                day,
                report,
                account=account,
                list_price=_list_price,  # genai-prices' list price, not the policy's
                tag_keys=tag_keys,
            ):
                writer.writerow(row)
    return OK


def _list_price(model: str) -> ModelPrice | None:
    """The list price of a canonical model name (it names its provider where that matters)."""
    return resolve(model, None).price
