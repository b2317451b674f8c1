"""``python -m prism_limiter``: the command line (for now, the demo)."""

from __future__ import annotations

import argparse

from prism_limiter import _demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prism-limiter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="workers share one budget until it blocks")
    demo.add_argument("--url", help="Redis URL (default: a private redis-server, or memory://)")
    demo.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    return _demo.run(args.url, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
