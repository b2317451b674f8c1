"""What every command shares: connection options, exit codes, output and argument parsing."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO, TypeVar

import redis
from rich.console import Console

from prism_limiter.engine._limiter import Limiter
from prism_limiter.engine._protocol import map_error
from prism_limiter.errors import InvalidRequest

# Exit codes (documented in ``prism-limiter --help`` and the README).
OK = 0
FINDING = 1  # a finding (a budget past a warn threshold, a failed check) or a failed operation
USAGE = 2  # a usage error, a bad policy file included
UNAVAILABLE = 3  # Redis could not be reached or refused to serve

DEFAULT_URL = "redis://localhost:6379/0"
URL_ENV = "PRISM_REDIS_URL"

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T")


class UsageError(Exception):
    """A command line that parses but makes no sense (exit 2)."""


def out() -> Console:
    """Rich output on stdout (no colour when it is not a terminal)."""
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def connection(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--namespace``, the options of every command that talks to Redis."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"Redis URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument("--namespace", default="prism", help="key namespace (default: %(default)s)")


def json_flag(parser: argparse.ArgumentParser, what: str = "the data") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def command(
    sub: Any,
    name: str,
    handler: Handler,
    help_text: str,
    *,
    description: str | None = None,
    redis_options: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand with its handler, its line in the parent's --help (``help_text``), its own
    ``--help`` (``description``, else the same line) and the connection options."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    if redis_options:
        connection(parser)
    return parser


@contextmanager
def limiter(args: argparse.Namespace, socket_timeout: float = 1.0) -> Iterator[Limiter]:
    """A limiter on ``--url`` / ``--namespace``; a bad URL is a usage error (exit 2)."""
    lim = Limiter.from_url(args.url, args.namespace, socket_timeout=socket_timeout)
    try:
        yield lim
    finally:
        lim.close()


@contextmanager
def output(path: str | None) -> Iterator[TextIO]:
    """The file ``--output`` names (created or replaced), else stdout (left open)."""
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as sink:
        yield sink


def call(client: Any, *command: str | int) -> Any:
    """One plain Redis command, its failures mapped like the library's own
    (``BackendUnavailable`` when Redis cannot serve)."""
    try:
        return client.execute_command(*command)
    except redis.RedisError as exc:
        raise map_error(exc) from exc


def guarded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` (a redis-py client method), its failures mapped like ``call``."""
    try:
        return fn(*args, **kwargs)
    except redis.RedisError as exc:
        raise map_error(exc) from exc


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


# -- parsing ---------------------------------------------------------------------------------


def day(value: str) -> date:
    """A UTC day, ``YYYY-MM-DD`` (argparse type)."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD, got {value!r}") from None


def moment(value: str) -> datetime:
    """A point in time: ``YYYY-MM-DD`` (its UTC midnight), an ISO-8601 datetime (naive is UTC),
    or a duration ago (``90s``, ``15m``, ``2h``, ``7d``)."""
    ago = _duration(value) if value[-1:] in tuple(_UNIT_S)[1:] else None
    if ago is not None:
        return datetime.now(UTC) - ago
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a day, an ISO-8601 time or a duration like 15m, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)\Z")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(value: str) -> timedelta | None:
    match = _DURATION.match(value.strip())
    if not match:
        return None
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def seconds(value: str) -> float:
    """A duration: seconds, or a number with ``s``, ``m``, ``h``, ``d`` or ``w`` (argparse type)."""
    parsed = _duration(value)
    if parsed is None or parsed.total_seconds() <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive duration like 3600, 90m, 12h or 7d, got {value!r}"
        )
    return parsed.total_seconds()


def month(value: str) -> date:
    """``YYYY-MM`` as the first day of that month (argparse type)."""
    try:
        return datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a month YYYY-MM, got {value!r}") from None


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def usd(value: float, places: int = 6) -> str:
    return f"${value:,.{places}f}"


def check_name(kind: str, value: str) -> str:
    """Project and budget names as the library takes them; a bad one is a usage error."""
    from prism_limiter.engine import _validate  # noqa: PLC0415 - keep the import graph flat

    try:
        return _validate.name(kind, value)
    except InvalidRequest as exc:
        raise UsageError(str(exc)) from None
