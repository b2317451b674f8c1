"""The circuit breaker: per limiter on one server, per hash slot on a cluster."""

from __future__ import annotations

import pytest

from prism_limiter import BackendUnavailable
from prism_limiter.engine._breaker import Breaker
from prism_limiter.engine._core import LimiterCore, Settings
from prism_limiter.engine._protocol import Command, first_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_scope_opens_and_closes_on_its_own() -> None:
    clock = Clock()
    breaker = Breaker(2, 5.0, clock)
    breaker.failed(1)
    breaker.failed(1)
    breaker.failed(2)
    with pytest.raises(BackendUnavailable, match="circuit open"):
        breaker.check(1)
    breaker.check(2)  # one failure: still closed
    breaker.check(0)
    clock.now += 5.1
    breaker.check(1)  # the cool-down is over: a probe may go
    breaker.succeeded(1)
    breaker.failed(1)
    breaker.check(1)  # the success reset the count


def _open_for(core: LimiterCore, project: str) -> bool:
    core.trust_memory_policy()
    try:
        list(core._preflight(project))
    except BackendUnavailable:
        return True
    return False


@pytest.mark.parametrize("sharded", [False, True])
def test_a_failing_shard_opens_only_its_own_slots_on_a_cluster(sharded: bool) -> None:
    """Three failures of one project's requests: on a single server every project fails
    fast; on a cluster only the projects of that slot do."""
    core = LimiterCore(Settings(breaker_failures=3, sharded=sharded))
    request = core._script("reserve", "alpha", [])
    for _ in range(3):
        core.observe(BackendUnavailable("down"), request)
    assert _open_for(core, "alpha")
    assert _open_for(core, "beta") is not sharded
    core.observe(None, core._script("status", "alpha", []))
    assert not _open_for(core, "alpha")


def test_the_key_of_each_command_kind() -> None:
    assert first_key(Command(("HGET", "prism:{p}:holds", "r"))) == "prism:{p}:holds"
    assert first_key(Command(("XREAD", "COUNT", 5, "STREAMS", "prism:{p}:audit", "0"))) == (
        "prism:{p}:audit"
    )
    assert first_key(Command(("CONFIG", "GET", "maxmemory-policy"))) is None
