"""``audit tail|export``: the audit streams, followed without gaps or exported by time."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import msgspec
from redis.cluster import RedisCluster
from rich.text import Text

from prism_limiter.audit._export import AuditExporter
from prism_limiter.cli._common import (
    FINDING,
    OK,
    UsageError,
    check_name,
    command,
    epoch_ms,
    guarded,
    json_flag,
    limiter,
    moment,
    out,
    output,
    text,
    write_json_line,
)
from prism_limiter.engine._limiter import Limiter

TAIL_HELP = """\
the last entries of PROJECT's audit stream (or of every project's, --all), pretty or --json
(one entry per line); --follow keeps printing new entries as they land. Following carries the
id of the last entry read into the next XREAD, so no entry between two reads is missed."""
EXPORT_HELP = """\
PROJECT's audit entries from --from to --to as JSON lines (XRANGE by time); or, with --follow
DIR, every entry exported as it lands, exactly once across crashes and restarts."""
VERIFY_HELP = """\
Check PROJECT's audit stream: every entry's seq follows the one before and its chain matches its
fields. Names the first edited, inserted, reordered or deleted entry (exit 1)."""
_RED = ("model.denied", "budget.blocked", "rate.limited", "hold.damaged")
_YELLOW = ("budget.warn", "hold.expired", "settle.over_estimate", "settle.late", "price.unknown")
_HIDDEN = ("event", "project", "ts_ms", "chain")
BLOCK_MS = 2000
REFRESH_S = 5.0


def register(sub: Any) -> None:
    group = sub.add_parser(
        "audit",
        help="tail or export the audit trail",
        description="Tail or export the audit streams (see the README).",
    )
    cmds = group.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = command(cmds, "tail", tail, "the last entries, or follow new ones", description=TAIL_HELP)
    p.add_argument("project", nargs="?", metavar="PROJECT")
    p.add_argument("--all", action="store_true", help="every project of the namespace")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    _event_flag(p)
    p.add_argument("--since", type=moment, help="from this time: a day, ISO time or 15m/2h/7d ago")
    p.add_argument("-n", "--lines", type=int, default=10, help="without --since: the last N")
    json_flag(p, "one entry per line")
    p = command(
        cmds, "export", export, "entries of a time range as JSON lines", description=EXPORT_HELP
    )
    p.add_argument("project", nargs="?", metavar="PROJECT")
    p.add_argument("--from", dest="start", type=moment, help="a day or ISO time")
    p.add_argument(
        "--to",
        dest="end",
        type=_end,
        help="exclusive end; a day YYYY-MM-DD includes that whole day",
    )
    _event_flag(p)
    p.add_argument("--output", "-o", help="write to this file (default: stdout)")
    p.add_argument(
        "--follow",
        metavar="DIR",
        help="instead: keep exporting every entry (of PROJECT, or of every project) to"
        " DIR/<project>/<UTC day>.jsonl, exactly once, until stopped (a consumer group)",
    )
    p = command(
        cmds, "verify", verify, "check the stream's seq and hash chain", description=VERIFY_HELP
    )
    p.add_argument("project", metavar="PROJECT")
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="resume after the checkpoint stored in FILE, and store the new one there when the"
        " stream verifies (keep it outside Redis: it is what catches a rewritten stream)",
    )
    json_flag(p, "the verification")


def _event_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--event",
        "-e",
        action="extend",
        nargs="+",
        metavar="E",
        default=[],
        help="only these events (globs like 'budget.*'; repeat or list several)",
    )


def _end(value: str) -> datetime:
    """``--to``: a plain day includes the whole day."""
    when = moment(value)
    is_day = len(value) == 10 and value[4] == "-"
    return when + timedelta(days=1) if is_day else when


@dataclass(frozen=True, slots=True)
class Entry:
    project: str
    id: str
    fields: dict[str, str]

    @property
    def order(self) -> tuple[int, int]:
        ms, _, seq = self.id.partition("-")
        return int(ms), int(seq or 0)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "project": self.project, **self.fields}


def _entries(project: str, raw: Iterable[Any]) -> list[Entry]:
    return [
        Entry(project, text(i), {text(k): text(v) for k, v in fields.items()}) for i, fields in raw
    ]


def matches(entry: Entry, events: list[str]) -> bool:
    return not events or any(fnmatchcase(entry.fields.get("event", ""), e) for e in events)


def pretty(entry: Entry) -> Text:
    ms = int(entry.fields.get("ts_ms") or entry.order[0])
    when = datetime.fromtimestamp(ms / 1000, UTC)
    event = entry.fields.get("event", "?")
    style = "red" if event in _RED else "yellow" if event in _YELLOW else "cyan"
    line = Text(f"{when:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d} ")
    line.append(f"{entry.project} ", style="bold")
    line.append(event, style=style)
    for k, v in entry.fields.items():
        if k not in _HIDDEN and v != "":
            line.append(f" {k}={v}")
    return line


class Tail:
    """The streams being read, each with the id of the last entry read from it."""

    def __init__(self, lim: Limiter, projects: list[str]) -> None:
        self.lim = lim
        self.client = lim.client
        self.last: dict[str, str] = {}
        self.projects: dict[str, str] = {}  # stream key -> project
        now_s, now_us = guarded(self.client.time)
        self.started = f"{int(now_s) * 1000 + int(now_us) // 1000}-0"
        for p in projects:
            self.add(p, joined_now=False)

    def add(self, project: str, *, joined_now: bool) -> None:
        key = self.lim.audit_key(project)
        if key in self.projects:
            return
        self.projects[key] = project
        if joined_now:  # a project that appeared while following: from when the tail began
            self.last[key] = self.started
            return
        newest = guarded(self.client.xrevrange, key, "+", "-", count=1)
        self.last[key] = text(newest[0][0]) if newest else "0-0"

    def history(self, since: datetime | None, lines: int) -> list[Entry]:
        """Entries up to each stream's starting id (so following continues exactly there)."""
        out: list[Entry] = []
        for key, project in self.projects.items():
            if self.last[key] == "0-0":
                continue
            if since is not None:
                out += self._range(key, project, str(epoch_ms(since)), self.last[key])
            elif lines > 0:
                raw = guarded(self.client.xrevrange, key, self.last[key], "-", count=lines)
                out += reversed(_entries(project, raw))
        out.sort(key=lambda e: e.order)
        return out if since is not None else out[-lines:] if lines > 0 else []

    def _range(self, key: str, project: str, start: str, end: str) -> list[Entry]:
        return list(xrange(self.client, key, project, start, end))

    def follow(self) -> Iterator[list[Entry]]:
        """Batches of new entries forever (empty when a read timed out), in order per stream;
        each read starts after the last id read from that stream."""
        while True:
            batch: list[Entry] = []
            if isinstance(self.client, RedisCluster):
                # the streams live in different slots there: one read per stream
                for key in list(self.last):
                    raw: Any = guarded(
                        self.client.xrange, key, "(" + self.last[key], "+", count=500
                    )
                    batch += self._advance(key, raw)
                if not batch:
                    time.sleep(0.5)
            else:
                reply = guarded(self.client.xread, dict(self.last), count=500, block=BLOCK_MS)
                items = reply.items() if isinstance(reply, dict) else reply or []
                for key, raw in items:
                    batch += self._advance(text(key), raw)
            yield batch

    def _advance(self, key: str, raw: Iterable[Any]) -> list[Entry]:
        entries = _entries(self.projects[key], raw)
        if entries:
            self.last[key] = entries[-1].id
        return entries


def xrange(client: Any, key: str, project: str, start: str, end: str) -> Iterator[Entry]:
    """Entries ``start``..``end`` (ids or ms, inclusive), in pages."""
    while True:
        page = _entries(project, guarded(client.xrange, key, start, end, count=1000))
        yield from page
        if len(page) < 1000:
            return
        start = "(" + page[-1].id


def _projects(lim: Limiter, args: argparse.Namespace) -> list[str]:
    if args.all == bool(args.project):
        raise UsageError("name a PROJECT or pass --all")
    return lim.projects() if args.all else [check_name("project", args.project)]


def tail(args: argparse.Namespace) -> int:
    show = write_json_line if args.json else None
    console = out()
    with limiter(args, socket_timeout=BLOCK_MS / 1000 + 3) as lim:
        t = Tail(lim, _projects(lim, args))

        def emit(entry: Entry) -> None:
            if matches(entry, args.event):
                if show is not None:
                    show(entry.to_dict())
                else:
                    console.print(pretty(entry))
                    sys.stdout.flush()

        for entry in t.history(args.since, args.lines):
            emit(entry)
        if not args.follow:
            return OK
        refreshed = time.monotonic()
        for batch in t.follow():
            for entry in batch:
                emit(entry)
            if args.all and time.monotonic() - refreshed > REFRESH_S:
                for p in lim.projects():
                    t.add(p, joined_now=True)
                refreshed = time.monotonic()
    return OK


def export(args: argparse.Namespace) -> int:
    if args.follow is not None:
        return _export_follow(args)
    if args.project is None or args.start is None or args.end is None:
        raise UsageError("export needs PROJECT, --from and --to (or --follow DIR)")
    project = check_name("project", args.project)
    if args.end <= args.start:
        raise UsageError("--to must be after --from")
    with output(args.output) as sink, limiter(args) as lim:
        key = lim.audit_key(project)
        start, end = str(epoch_ms(args.start)), str(epoch_ms(args.end) - 1)
        for entry in xrange(lim.client, key, project, start, end):
            if matches(entry, args.event):
                sink.write(_jsonl(entry))
    return OK


def _jsonl(entry: Entry) -> str:
    return json.dumps(entry.to_dict(), separators=(",", ":")) + "\n"


def _export_follow(args: argparse.Namespace) -> int:
    """``export --follow DIR``: the exporter runs until SIGTERM or SIGINT."""
    projects = [check_name("project", args.project)] if args.project else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with limiter(args) as lim:
        written = AuditExporter(lim, args.follow, projects=projects).run(stop)
    print(f"{written} entries exported to {args.follow}", file=sys.stderr)
    return OK


def verify(args: argparse.Namespace) -> int:
    project = check_name("project", args.project)
    checkpoint = None
    path = Path(args.checkpoint) if args.checkpoint else None
    if path is not None and path.exists():
        try:
            checkpoint = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the checkpoint {path}: {exc}") from None
    with limiter(args) as lim:
        result = lim.verify_audit(project, checkpoint)
    if result.ok and path is not None and result.checkpoint is not None:
        path.write_text(json.dumps(msgspec.to_builtins(result.checkpoint)) + "\n")
    if args.json:
        write_json_line(result.to_dict())
    elif result.ok:
        note = "" if result.chained else " (seq only: these entries carry no chain)"
        out().print(Text(f"{project}: {result.checked} entries verified{note}"))
    else:
        out().print(
            Text(f"{project}: entry {result.bad_id} (seq {result.bad_seq}): {result.problem}")
        )
    return OK if result.ok else FINDING
