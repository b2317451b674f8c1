"""What the demo prints: live progress while it runs, then what the workers saw and what the
ledger holds (the status table and audit entries as ``status`` and ``audit tail`` print them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from prism_limiter.cli import status
from prism_limiter.cli._common import usd
from prism_limiter.cli._demo_scenario import BUDGET, CALL, MODEL, PROJECT, RATE, Outcome
from prism_limiter.cli._stored import stored_policy
from prism_limiter.cli.audit import Tail, pretty, xrange
from prism_limiter.engine._limiter import Limiter

DENIALS = {RATE: "rate-limited", BUDGET: "blocked", MODEL: "model-denied"}
PLAIN_EVERY_S = 5.0  # progress lines when the output is no terminal
LAST_ENTRIES = 12


@dataclass
class Row:
    """One feature of one worker: what its attempts came to."""

    calls: int = 0
    spent_usd: float = 0.0
    denied: Counter[str] = field(default_factory=Counter)


@dataclass
class Tally:
    """Every attempt the workers reported, per worker and feature and per denial."""

    rows: dict[tuple[int, str], Row] = field(default_factory=dict)
    denials: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, worker: int, feature: str, outcome: Outcome) -> None:
        row = self.rows.setdefault((worker, feature), Row())
        if outcome.kind == CALL:
            row.calls += 1
            row.spent_usd += outcome.cost_usd
        else:
            row.denied[outcome.kind] += 1
            self.denials[(outcome.kind, outcome.detail)] += 1

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.rows.values())

    @property
    def spent_usd(self) -> float:
        return sum(r.spent_usd for r in self.rows.values())

    def calls_of(self, worker: int) -> int:
        return sum(r.calls for (w, _), r in self.rows.items() if w == worker)

    def summary(self) -> str:
        kinds = Counter(kind for kind, _ in self.denials.elements())
        denied = ", ".join(f"{kinds[k]} {DENIALS[k]}" for k in DENIALS if kinds[k])
        return f"{self.calls} calls, {usd(self.spent_usd, 4)} spent; denied: {denied or 'none'}"


def workers_table(tally: Tally, title: str | None = None) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    table.add_column("worker", justify="right")
    table.add_column("feature")
    table.add_column("calls", justify="right")
    table.add_column("spent", justify="right")
    for label in DENIALS.values():
        table.add_column(label, justify="right")
    for (worker, feature), row in sorted(tally.rows.items()):
        denied = [str(row.denied[k] or "-") for k in DENIALS]
        table.add_row(str(worker), Text(feature), str(row.calls), usd(row.spent_usd, 4), *denied)
    return table


def denials_table(tally: Tally) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("denial")
    table.add_column("by")
    table.add_column("count", justify="right")
    for (kind, detail), n in sorted(tally.denials.items()):
        table.add_row(DENIALS[kind], Text(detail), str(n))
    return table


class Progress:
    """Live progress: a table redrawn a few times a second on a terminal; elsewhere (a pipe,
    a file) one plain line every few seconds, so nothing redrawn ends up in the output."""

    def __init__(self, console: Console, live: Live | None) -> None:
        self.console = console
        self.live = live
        self.printed = 0.0

    def event(self, elapsed: float, line: str) -> None:
        self.console.print(Text(f"{elapsed:6.1f}s  {line}"))

    def update(self, tally: Tally, elapsed: float, seconds: float) -> None:
        if self.live is not None:
            head = Text(f"{elapsed:4.1f}s of {seconds:g}s  {tally.summary()}", style="bold")
            self.live.update(Group(head, workers_table(tally)))
        elif elapsed - self.printed >= PLAIN_EVERY_S:
            self.printed = elapsed
            self.event(elapsed, tally.summary())


@contextmanager
def progress(console: Console) -> Iterator[Progress]:
    if not console.is_terminal or console.is_dumb_terminal:
        yield Progress(console, None)
        return
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        yield Progress(console, live)


def heading(console: Console, title: str) -> None:
    console.print()
    console.rule(Text(title, style="bold"), align="left")


def report(console: Console, lim: Limiter, tally: Tally) -> bool:
    """The sections after the run; True when every budget stayed within its cap (an
    override in force included)."""
    heading(console, "what the workers saw")
    console.print(workers_table(tally))
    heading(console, "budgets (as `prism-limiter status` prints them)")
    states = lim.status(PROJECT)
    policy = stored_policy(lim.client, lim.namespace).policy.for_project(PROJECT)
    status.render(PROJECT, status.rows(states, policy, lim.list_overrides(PROJECT)))
    heading(console, "denials by reason")
    console.print(denials_table(tally) if tally.denials else Text("none"))
    heading(console, "the audit trail")
    trail = xrange(lim.client, lim.audit_key(PROJECT), PROJECT, "-", "+")
    events = Counter(entry.fields.get("event", "?") for entry in trail)
    counts = ", ".join(f"{n} x {e}" for e, n in sorted(events.items()))
    console.print(Text(f"{events.total()} entries: {counts}"), soft_wrap=False)
    console.print(Text(f"the last {LAST_ENTRIES}, as `prism-limiter audit tail` prints them:"))
    for entry in Tail(lim, [PROJECT]).history(None, LAST_ENTRIES):
        console.print(pretty(entry))
    within = all(s.spent_usd <= s.cap_usd for s in states)
    daily = sum(s.spent_usd for s in states if s.budget == "daily")
    console.print()
    console.print(
        Text(
            f"the workers settled {usd(tally.spent_usd)} in {tally.calls} calls, the daily "
            f"budget booked {usd(daily)}; "
            + (
                "every budget stayed within its cap (an override included)"
                if within
                else "A BUDGET WENT OVER ITS CAP"
            ),
            style="bold" if within else "bold red",
        )
    )
    return within
