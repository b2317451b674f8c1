"""``durable_replicas``: each write and a ``WAIT`` on one connection to the primary that owns
its keys. The steps are planned here, without I/O; the sync and asyncio script runners only
execute them (``_scripts``).

``WAIT N timeout`` counts the replicas that acknowledged the writes of *its own connection*,
so it goes in one non-transactional pipeline with the write, to the node that serves the
write's slot (a pooled ``client.wait()`` could run on another connection and prove nothing).
Between the two a barrier write, ``SET <ns>:{<project>}:wait 1 PX 60000``: a retried call that
only replays a stored outcome writes nothing of its own, and its WAIT would then count the
replicas of some older write of that connection, not of the first attempt's. After the
barrier, N acknowledgements mean N replicas hold everything the primary had written before,
the first attempt included: an acknowledged retry settles an earlier ``NotReplicated``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

import redis.exceptions as rexc

from prism_limiter.engine._protocol import Request, Script, first_key
from prism_limiter.errors import BackendUnavailable, NotReplicated

BARRIER_TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class Durability:
    """What ``durable_replicas`` asks of every write."""

    replicas: int  # acknowledgements wanted (WAIT numreplicas)
    timeout_ms: int  # WAIT timeout; below the socket timeout
    sharded: bool  # a Redis Cluster: route to the slot's primary, follow a moved slot
    retries: int  # more attempts after a connection error or a moved slot


@dataclass(frozen=True, slots=True)
class Batch:
    """Send ``commands`` in one pipeline to the primary serving ``key``. Reply: their results,
    error replies as exception objects."""

    key: str
    commands: list[tuple[str | int, ...]]


@dataclass(frozen=True, slots=True)
class Reload:
    """Load the code again: the Function library (``name`` None) or one ``EVALSHA`` script."""

    name: str | None


@dataclass(frozen=True, slots=True)
class Remap:
    """Read the cluster's slot map again, after ``pause_s``."""

    pause_s: float


Step = Batch | Reload | Remap


class Code(Protocol):
    """The runner's view of how a script is sent now (``FCALL`` or ``EVALSHA``)."""

    @property
    def functions(self) -> bool | None: ...

    def command(self, request: Request) -> tuple[str | int, ...]: ...


def function_missing(exc: Exception) -> bool:
    """FCALL found no such function (or no FCALL at all): nothing ran."""
    text = str(exc)
    return "Function not found" in text or "unknown command" in text.lower()


def barrier_key(key: str) -> str:
    """A key of ``key``'s slot and namespace: ``prism:{p}:wait`` beside ``prism:{p}:holds``,
    ``prism:policy:wait{prism:policy}`` beside a key without a hash tag."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if end > start + 1:
        return key[: end + 1] + ":wait"
    return f"{key}:wait{{{key}}}"


def write(request: Request, code: Code, durability: Durability) -> Generator[Step, Any, Any]:
    """Run one write durably; returns its reply, or raises ``NotReplicated`` (or the Redis
    error, which the driver translates)."""
    key = first_key(request)
    if key is None:  # every write of the core names its key; refuse rather than guess
        raise AssertionError(f"a write without a key: {request}")
    wait: tuple[str | int, ...] = ("WAIT", durability.replicas, durability.timeout_ms)
    barrier: tuple[str | int, ...] = ("SET", barrier_key(key), 1, "PX", BARRIER_TTL_MS)
    failures = reloads = 0
    while True:
        try:
            results = yield Batch(key, [code.command(request), barrier, wait])
            reply, acked = results[0], results[-1]
            if isinstance(reply, rexc.ConnectionError | rexc.TimeoutError):
                raise reply  # read half-way: the outcome is unknown
        except (rexc.ConnectionError, rexc.TimeoutError):
            failures += 1
            if not durability.sharded or failures > durability.retries:
                raise
            # A cluster node's own client does not retry: the slot may have a new primary.
            yield Remap(min(0.2, 0.02 * 2**failures))
            continue
        if isinstance(reply, rexc.AskError):  # MOVED too (a subclass): nothing ran
            failures += 1
            if failures > durability.retries + 1:
                raise BackendUnavailable(f"Redis unavailable: the slot kept moving ({reply})")
            yield Remap(0.0)
            continue
        missing = isinstance(reply, rexc.NoScriptError) or (
            isinstance(reply, rexc.ResponseError)
            and code.functions is not False
            and function_missing(reply)
        )
        if missing and reloads < 2:  # nothing ran: load the code, send it again
            reloads += 1
            script = isinstance(reply, rexc.NoScriptError) and isinstance(request, Script)
            yield Reload(request.name if script and isinstance(request, Script) else None)
            continue
        for outcome in results:  # the write's error first, then the barrier's (a missing
            if isinstance(outcome, Exception):  # +set permission, say), then WAIT's
                raise outcome
        if int(acked) < durability.replicas:
            raise NotReplicated(
                f"only {int(acked)} of {durability.replicas} replicas acknowledged the write"
                f" within {durability.timeout_ms} ms; it ran on the primary and a failover now"
                " could lose it: outcome unknown, retry with the same id",
                acknowledged=int(acked),
                wanted=durability.replicas,
            )
        return reply
