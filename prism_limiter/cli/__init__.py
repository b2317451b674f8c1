"""``prism-limiter``: the operators' command line (also ``python -m prism_limiter``)."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

import structlog

from prism_limiter import __version__
from prism_limiter.cli._common import FINDING, UNAVAILABLE, USAGE, UsageError, err
from prism_limiter.errors import (
    BackendUnavailable,
    InvalidRequest,
    PolicyError,
    PrismLimiterError,
)

DESCRIPTION = """\
Govern LLM spend on Redis: policies, budgets, reports, the audit trail, overrides.

Every command takes --help. Commands that talk to Redis take --url (default: $PRISM_REDIS_URL,
else redis://localhost:6379/0) and --namespace (default: prism); those that print data take
--json."""

EPILOG = """\
exit codes:
  0  ok
  1  a finding (a budget past a warn threshold, a failed doctor check, policy drift with
     --exit-code) or a failed operation
  2  usage error, a bad policy file included
  3  Redis unavailable (unreachable, refusing writes, or evicting keys)"""

# One module per command group, each with ``register(subparsers)``; in the order of --help.
COMMANDS = ("status", "report", "policy", "audit", "override", "export", "doctor", "demo")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="prism-limiter",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"prism-limiter {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"prism_limiter.cli.{name}").register(sub)
    return top


def _quiet_logs() -> None:
    """The library logs through structlog; a command prints its data on stdout, so send the
    library's log lines (warnings and up) to stderr."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(30),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet_logs()
    try:
        code: int = args.handler(args)
    except (UsageError, InvalidRequest, PolicyError) as exc:
        err().print(f"prism-limiter: error: {exc}", markup=False)
        return USAGE
    except BackendUnavailable as exc:
        err().print(f"prism-limiter: {exc}", markup=False)
        return UNAVAILABLE
    except PrismLimiterError as exc:
        err().print(f"prism-limiter: failed: {exc}", markup=False)
        return FINDING
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `prism-limiter audit tail ... | head`: the reader has gone
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
