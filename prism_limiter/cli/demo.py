"""``demo``: worker processes share one budget until it blocks them."""

from __future__ import annotations

import argparse
from typing import Any

from prism_limiter import _demo
from prism_limiter.cli._common import command


def register(sub: Any) -> None:
    demo = command(
        sub, "demo", run, "workers share one budget until it blocks", redis_options=False
    )
    demo.add_argument("--url", help="Redis URL (default: a private redis-server, or memory://)")
    demo.add_argument("--workers", type=int, default=4)


def run(args: argparse.Namespace) -> int:
    return _demo.run(args.url, args.workers)
