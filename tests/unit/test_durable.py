"""durable_replicas: the plan of one durable write, and the option's checks (no server)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import redis
import redis.exceptions as rexc

from prism_limiter import AsyncLimiter, BackendUnavailable, InvalidRequest, Limiter, NotReplicated
from prism_limiter.engine._durable import (
    Batch,
    Durability,
    Reload,
    Remap,
    Step,
    barrier_key,
    write,
)
from prism_limiter.engine._protocol import Command, Script

SCRIPT = Script("settle", ["prism:{p}:policy", "prism:{p}:holds"], ["p", 1])
ONE = Durability(replicas=1, timeout_ms=100, sharded=False, retries=2)
SHARDED = Durability(replicas=1, timeout_ms=100, sharded=True, retries=2)


class Code:
    def __init__(self, functions: bool | None = True) -> None:
        self.functions = functions

    def command(self, request: Any) -> tuple[str | int, ...]:
        return ("FCALL", "f", 0) if isinstance(request, Script) else request.args


def drive(plan: Generator[Step, Any, Any], replies: list[Any]) -> tuple[list[Step], Any]:
    """Feed ``replies`` to the plan in turn (an exception instance is thrown into it)."""
    steps: list[Step] = []
    step = next(plan)
    try:
        while True:
            steps.append(step)
            reply = replies.pop(0) if isinstance(step, Batch) else None
            step = plan.throw(reply) if isinstance(reply, BaseException) else plan.send(reply)
    except StopIteration as stop:
        return steps, stop.value


def test_the_write_its_barrier_and_wait_go_in_one_batch() -> None:
    steps, reply = drive(write(SCRIPT, Code(), ONE), [[["settled"], True, 1]])
    [batch] = steps
    assert isinstance(batch, Batch) and batch.key == "prism:{p}:policy"
    assert batch.commands == [
        ("FCALL", "f", 0),
        ("SET", "prism:{p}:wait", 1, "PX", 60_000),
        ("WAIT", 1, 100),
    ]
    assert reply == ["settled"]


def test_too_few_acknowledgements_raise_not_replicated() -> None:
    with pytest.raises(NotReplicated, match="retry with the same id") as exc:
        drive(write(SCRIPT, Code(), ONE), [[["settled"], True, 0]])
    assert isinstance(exc.value, BackendUnavailable)
    assert (exc.value.acknowledged, exc.value.wanted) == (0, 1)


def test_a_missing_library_or_script_is_loaded_and_the_write_sent_again() -> None:
    missing = rexc.ResponseError("Function not found")
    steps, reply = drive(write(SCRIPT, Code(), ONE), [[missing, True, 1], [["ok"], True, 1]])
    assert reply == ["ok"]
    assert [type(s) for s in steps] == [Batch, Reload, Batch] and steps[1] == Reload(None)
    steps, _ = drive(
        write(SCRIPT, Code(False), ONE), [[rexc.NoScriptError("x"), True, 1], [["ok"], True, 1]]
    )
    assert steps[1] == Reload("settle")


def test_on_a_cluster_a_moved_slot_or_a_dead_node_remaps_then_retries() -> None:
    moved = rexc.MovedError("3999 127.0.0.1:7001")
    steps, reply = drive(write(SCRIPT, Code(), SHARDED), [[moved, True, 1], [["ok"], True, 1]])
    assert [type(s) for s in steps] == [Batch, Remap, Batch] and reply == ["ok"]
    down = rexc.ConnectionError("refused")
    steps, reply = drive(write(SCRIPT, Code(), SHARDED), [down, down, [["ok"], True, 1]])
    assert [type(s) for s in steps] == [Batch, Remap, Batch, Remap, Batch]
    with pytest.raises(rexc.ConnectionError):
        drive(write(SCRIPT, Code(), SHARDED), [down, down, down])
    with pytest.raises(rexc.ConnectionError):  # one server: its client already retried
        drive(write(SCRIPT, Code(), ONE), [down])


def test_other_errors_are_raised_as_they_are() -> None:
    with pytest.raises(rexc.ResponseError, match="OOM"):
        drive(write(SCRIPT, Code(), ONE), [[rexc.ResponseError("OOM"), True, 1]])
    refused = rexc.NoPermissionError("no permissions to run the 'set' command")
    with pytest.raises(rexc.NoPermissionError):  # a barrier refused: say so, never skip it
        drive(write(SCRIPT, Code(), ONE), [[["settled"], refused, 1]])


def test_a_plain_write_command_is_waited_for_too() -> None:
    steps, _ = drive(
        write(Command(("SADD", "prism:projects", "p"), True), Code(), ONE), [[1, 1, 1]]
    )
    assert steps[0] == Batch(
        "prism:projects",
        [
            ("SADD", "prism:projects", "p"),
            ("SET", "prism:projects:wait{prism:projects}", 1, "PX", 60_000),
            ("WAIT", 1, 100),
        ],
    )


def test_the_barrier_shares_the_slot_and_namespace() -> None:
    from redis.crc import key_slot

    for key in ("prism:{search}:holds", "prism:policy", "ns:{a}:b:{c}"):
        barrier = barrier_key(key)
        assert key_slot(barrier.encode()) == key_slot(key.encode())
        assert barrier.startswith(key.split(":")[0] + ":")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"durable_replicas": -1}, "durable_replicas"),
        ({"durable_replicas": True}, "durable_replicas"),
        ({"durable_replicas": 1.0}, "durable_replicas"),
        ({"durable_replicas": 1, "durable_timeout_s": 0}, "durable_timeout_s"),
        ({"durable_replicas": 1, "durable_timeout_s": 1.0}, "below the client's socket timeout"),
        ({"durable_replicas": 1, "durable_timeout_s": 2, "socket_timeout": 1}, "socket timeout"),
    ],
)
@pytest.mark.parametrize("cls", [Limiter, AsyncLimiter])
def test_bad_durability_options_are_refused(cls: Any, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        cls.from_url("redis://127.0.0.1:1/0", **kwargs)


def test_memory_has_no_replicas() -> None:
    with pytest.raises(InvalidRequest, match="no replicas"):
        Limiter.from_url("memory://durable", durable_replicas=1)
    Limiter.from_url("memory://durable", durable_replicas=0).close()


def test_the_default_sends_scripts_as_before() -> None:
    """durable_replicas=0: no durable runner step, no WAIT (the plain path)."""
    lim = Limiter(redis.Redis(port=1, socket_timeout=1))
    assert lim._durable is False and lim._scripts.durability is None
    lim.close()
