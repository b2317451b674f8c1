"""``demo``: worker processes run a realistic scenario against one project's limits."""

from __future__ import annotations

import argparse
from typing import Any

from prism_limiter.cli import _demo
from prism_limiter.cli._common import command

HELP = """\
worker processes run a day of traffic in seconds against the project `demo`: a feature that
settles what it used, a runaway agent retrying into its rate limit, a customer over its daily
split budget until an override is approved, requests for a denied model. Live progress, then
the status table, the denials by reason and the last audit entries.

It runs on --url, else $PRISM_REDIS_URL, else a private redis-server from PATH (stopped at the
end unless --keep), else the embedded memory:// store (threads instead of processes). It
deletes the `demo` project's keys there first: give it a scratch Redis."""


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds <= 60:
        raise argparse.ArgumentTypeError(f"expected seconds from 1 to 60, got {value!r}")
    return seconds


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 32:
        raise argparse.ArgumentTypeError(f"expected 1 to 32 workers, got {value!r}")
    return int(value)


def register(sub: Any) -> None:
    demo = command(
        sub,
        "demo",
        run,
        "workers hit a rate limit, a split budget, a denied model",
        description=HELP,
        redis_options=False,
    )
    demo.add_argument("--url", help="Redis URL (default: a private redis-server, or memory://)")
    demo.add_argument("--workers", type=_workers, default=4, help="1 to 32 (default: %(default)s)")
    demo.add_argument(
        "--seconds", type=_seconds, default=_demo.SECONDS, help="1 to 60 (default: %(default)g)"
    )
    demo.add_argument(
        "--keep", action="store_true", help="leave the private redis-server running afterwards"
    )


def run(args: argparse.Namespace) -> int:
    return _demo.run(args.url, args.workers, seconds=args.seconds, keep=args.keep)
