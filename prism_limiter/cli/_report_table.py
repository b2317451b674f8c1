"""``report`` as terminal tables: rows with a spend bar, the footer, and the budgets' burn."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from rich import box
from rich.table import Table
from rich.text import Text

from prism_limiter.cli._bars import share_bar
from prism_limiter.cli._common import out
from prism_limiter.cli._reportmath import UNTAGGED_LABEL, Report, Row


def count(n: int) -> str:
    """Compact: 1234 -> 1,234; 184478 -> 184.5k; 1234567 -> 1.23M (JSON and CSV are exact)."""
    if n >= 10_000_000:
        return f"{n / 1e6:,.1f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 100_000:
        return f"{n / 1e3:.1f}k"
    return f"{n:,}"


def money(value: float | None, places: int = 4) -> str:
    return "-" if value is None else f"${value:,.{places}f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _spend_cells(row: Row, total: float) -> list[Text | str]:
    u = row.usage
    return [
        Text(row.key),
        money(u.cost_usd),
        share_bar(u.cost_usd, total),
        count(u.requests),
        money(row.per_request, 6),
        money(row.per_1k_tokens, 5),
    ]


def _token_cells(row: Row) -> list[Text | str]:
    u = row.usage
    return [
        Text(row.key),
        count(u.input_tokens),
        count(u.output_tokens),
        count(u.cache_read_tokens),
        count(u.cache_write_tokens),
        ratio(row.cache_hit),
        money(row.saved_usd),
    ]


def _table(title: str, heads: list[str], key_width: int) -> Table:
    table = Table(
        title=Text(title, style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    for i, head in enumerate(heads):
        if i == 0:
            table.add_column(head, no_wrap=True, min_width=min(key_width, 28))
        else:
            table.add_column(head, justify="left" if head == "share" else "right", no_wrap=True)
    return table


def render(report: Report) -> None:
    console = out()
    by = {"model": "model", "day": "UTC day"}.get(report.by, f"tag {report.by[4:]!r}")
    key = {"model": "model", "day": "day"}.get(report.by, report.by[4:])
    span = f"{report.first} to {report.last} (UTC days)"
    width = max([len(key), 5, *(len(r.key) for r in report.rows)])
    spend = _table(
        f"{report.project}: spend by {by}, {span}",
        [key, "spend", "share", "requests", "$/request", "$/1k\ntokens"],
        width,
    )
    tokens = _table(
        "tokens and the prompt cache",
        [key, "input", "output", "cache\nread", "cache\nwrite", "cache\nhit", "cache\nsaved"],
        width,
    )
    total = report.total.usage.cost_usd
    for row in report.rows:
        spend.add_row(*_spend_cells(row, total))
        tokens.add_row(*_token_cells(row))
    for table, cells in (
        (spend, _spend_cells(report.total, total)),
        (tokens, _token_cells(report.total)),
    ):
        table.add_section()
        table.add_row(*cells, style="bold")
    console.print(spend)
    console.print(tokens)
    for line in footer(report):
        console.print(Text(line), soft_wrap=False)
    if report.budgets:
        console.print(budgets_table(report))


def footer(report: Report) -> list[str]:
    t = report.total.usage
    lines = []
    if report.adds_up:
        lines.append(
            f"The rows add up to the total: {money(t.cost_usd, 6)} over {t.requests:,}"
            " requests (every request is counted once per breakdown)."
        )
    else:
        lines.append("The rows do NOT add up to the total: the usage counters look damaged.")
    if report.by.startswith("tag:"):
        lines.append(
            f"{UNTAGGED_LABEL}: requests without the tag {report.by[4:]!r}. Cache savings are"
            " priced per model and not split by tag value (total above)."
        )
    lines.append(
        "Cache saved: cache-read tokens at the plain input price minus their cache-read price"
        " (base tier; the policy's negotiated prices where it has them)."
    )
    if report.usd_per_day is not None:
        lines.append(f"Burn rate over the range: {money(report.usd_per_day)}/day.")
    return lines


def _date(moment: datetime | None, zone: str) -> str:
    """In the budget's zone (a daily cap runs out at an hour, not just on a day)."""
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M %Z}" if moment else "-"


def budgets_table(report: Report) -> Table:
    width = max(len(b.state.budget) + len(b.state.split_value or "") + 3 for b in report.budgets)
    table = _table(
        "budgets: the burn rate of this period so far, and where it leads",
        ["budget", "spent", "cap", "$/day", "forecast\nat reset", "cap\nruns out"],
        width,
    )
    for b in report.budgets:
        s = b.state
        name = s.budget + (f" [{s.split_value}]" if s.split_value else "")
        if b.burn is None:
            rate = forecast = "-"
            runs_out = "(no period)"
        else:
            rate = money(b.burn.usd_per_day)
            forecast = money(b.burn.forecast_usd)
            if b.burn.runs_out is None:
                runs_out = "after the reset"
            elif b.burn.runs_out <= report.now:
                runs_out = "already at the cap"
            else:
                runs_out = _date(b.burn.runs_out, b.timezone)
        table.add_row(
            Text(name),
            money(s.spent_usd),
            money(s.cap_usd, 2),
            rate,
            forecast,
            runs_out,
        )
    return table
