"""The sans-I/O protocol between the pure core and the sync/async drivers.

Every operation is a generator that yields :class:`Script` or :class:`Command` requests and
receives their replies; a driver only executes them. On a Redis failure the driver throws
``BackendUnavailable`` into the generator, so the failure policy lives in the core too.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions as rexc

from prism_limiter.errors import BackendUnavailable, PrismLimiterError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    keys: list[str]
    args: list[str | int]
    writes: bool = True  # may change state (``durable_replicas`` waits for its replication)


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[str | int, ...]
    writes: bool = False


Request = Script | Command
Op = Generator[Request, Any, T]

# The commands the core sends whose first key is their first argument.
_KEY_FIRST = frozenset(
    ("HGET", "HMGET", "HGETALL", "SADD", "SMEMBERS", "SISMEMBER", "SCARD", "XRANGE")
)


def first_key(request: Request) -> str | None:
    """The key that decides where ``request`` runs on a cluster (None: a keyless command)."""
    if isinstance(request, Script):
        return request.keys[0] if request.keys else None
    args = request.args
    name = str(args[0]).upper()
    if name == "XREAD" and "STREAMS" in args:
        return str(args[args.index("STREAMS") + 1])
    return str(args[1]) if name in _KEY_FIRST and len(args) > 1 else None


# Error replies that mean "the server cannot serve now", not "the request is wrong".
_UNAVAILABLE_REPLIES = (
    "OOM",
    "READONLY",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
)
_UNAVAILABLE_ERRORS = (
    rexc.OutOfMemoryError,
    rexc.ReadOnlyError,
    rexc.BusyLoadingError,
    rexc.MasterDownError,
    rexc.TryAgainError,
)


def map_error(exc: Exception) -> PrismLimiterError:
    """Translate a redis-py error into this library's tree (one place, raised ``from exc``)."""
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | rexc.ClusterError):
        return BackendUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, _UNAVAILABLE_ERRORS) or (
        isinstance(exc, rexc.ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES)
    ):
        return BackendUnavailable(f"Redis refused the operation ({type(exc).__name__}): {exc}")
    if (
        isinstance(exc, rexc.NoPermissionError)
        or "NOPERM" in str(exc)
        or ("can't run this command" in str(exc))
    ):
        return PrismLimiterError(
            "Redis refused: this user lacks a permission the limiter needs (the README's"
            f" 'Least privilege' section lists them): {exc}"
        )
    return PrismLimiterError(f"unexpected Redis error: {type(exc).__name__}: {exc}")


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_int(value: Any) -> int:
    return int(value)  # int() reads bytes and str replies too
