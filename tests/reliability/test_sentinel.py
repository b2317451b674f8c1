"""Primary + replica + Sentinel: the limiter through ``redis+sentinel://``, across a failover."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _helpers import spent_nano
from _load import USAGE, Load
from _servers import SentinelGroup, sentinel_group
from test_server_faults import ACL_RULES

from prism_limiter import (
    AsyncLimiter,
    BudgetExceeded,
    InvalidRequest,
    Limiter,
    Policy,
    PrismLimiterError,
)
from prism_limiter.engine._devserver import redis_server_binary

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["gpt-4o"]
[[projects.p.budgets]]
id = "b"
usd = 1000.0
[projects.tight]
allow_models = ["gpt-4o"]
[[projects.tight.budgets]]
id = "cap"
usd = 0.001
"""
)


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not on PATH")
    with sentinel_group() as started:
        yield started


def test_the_whole_cycle_through_sentinel(group: SentinelGroup) -> None:
    """reserve / settle / release / status / budgets, on both faces, via the Sentinel URL."""
    with Limiter.from_url(group.url) as lim:
        lim.apply_policy(POLICY)
        lim.reserve("tight", "gpt-4o", est_tokens=100, max_output_tokens=0).settle(
            input_tokens=100, output_tokens=0
        )
        assert lim.reserve("tight", "gpt-4o", est_tokens=100, max_output_tokens=0).release()
        with pytest.raises(BudgetExceeded):
            lim.reserve("tight", "gpt-4o", est_tokens=1000, max_output_tokens=0)
        [state] = lim.status("tight")
        assert state.spent_usd == pytest.approx(0.00025) and state.held_usd == 0

    async def cycle() -> None:
        async with AsyncLimiter.from_url(group.url) as alim:
            r = await alim.reserve("tight", "gpt-4o", est_tokens=100, max_output_tokens=0)
            await r.settle(input_tokens=100, output_tokens=0)
            [state] = await alim.status("tight")
            assert state.spent_usd == pytest.approx(0.0005)

    asyncio.run(cycle())


BAD_URLS = [
    ("redis+sentinel://127.0.0.1:{port}", "service"),
    ("redis+sentinel://127.0.0.1:{port}/", "service"),
    ("redis+sentinel://127.0.0.1:{port},127.0.0.1:0/prism", "port"),
    ("redis+sentinel://127.0.0.1:x/prism", "port"),
    ("redis+sentinel://127.0.0.1:{port}/prism/zero", "database"),
]


@pytest.mark.parametrize(("template", "needle"), BAD_URLS)
def test_a_bad_sentinel_url_is_refused_before_any_io(
    group: SentinelGroup, template: str, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Malformed URLs naming the live Sentinel: InvalidRequest, and no socket is opened."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    url = template.format(port=group.sentinel.port)
    for cls in (Limiter, AsyncLimiter):
        with pytest.raises(InvalidRequest, match=needle):
            cls.from_url(url)


def test_durable_replicas_through_sentinel(group: SentinelGroup) -> None:
    """durable_replicas=1: an acknowledged settle is on the replica when the call returns,
    also right after the primary lost its Function library (reloaded, sent again)."""
    replica: Any = redis.Redis(port=group.replica.port)
    primary = redis.Redis(port=group.primary.port)
    try:
        with Limiter.from_url(group.url, durable_replicas=1) as lim:
            for i in range(10):
                if i == 5:
                    primary.function_flush()
                r = lim.reserve("p", "gpt-4o", est_tokens=100, reservation_id=f"dur-{i}")
                r.settle(input_tokens=100, output_tokens=10)
                record = replica.hget("prism:{p}:holds", r.id)
                assert record is not None and record.startswith(b"S")
    finally:
        replica.close()
        primary.close()


def test_durable_replicas_with_least_privilege(group: SentinelGroup) -> None:
    """The README's ACL rules plus +wait and +set are enough for durable writes; without
    +set the barrier is refused and the call says which permission is missing."""
    admin: Any = redis.Redis(port=group.primary.port)
    url = f"redis://prism:s3cret@127.0.0.1:{group.primary.port}/0"
    try:
        admin.execute_command("ACL", "SETUSER", "prism", *ACL_RULES.split(), "+wait", "+set")
        with Limiter.from_url(url, durable_replicas=1) as lim:
            lim.reserve("p", "gpt-4o", est_tokens=10).settle(input_tokens=10, output_tokens=1)
            admin.execute_command("ACL", "SETUSER", "prism", "-set")
            with pytest.raises(PrismLimiterError, match="lacks a permission"):
                lim.reserve("p", "gpt-4o", est_tokens=10)
    finally:
        admin.execute_command("ACL", "DELUSER", "prism")
        admin.close()


def test_the_limiter_follows_a_failover(group: SentinelGroup) -> None:
    """SIGKILL the primary under load: calls fail only with BackendUnavailable until the
    Sentinel has promoted the replica, then the same limiter works again (no restart) and the
    spend replicated before the crash is still there."""
    lim = Limiter.from_url(group.url, socket_timeout=1, breaker_failures=10**6)
    lim.apply_policy(POLICY)
    for i in range(5):
        lim.reserve("p", "gpt-4o", est_tokens=1000, reservation_id=f"before-{i}").settle(**USAGE)
    group.wait_replicated()  # no WAIT here: make sure the replica has it all
    primary = redis.Redis(port=group.primary.port)
    before = spent_nano(primary, "p", "b")
    primary.close()
    assert before > 0

    with Load(lim, "p", "after") as load:
        assert load.wait(acknowledged=5), "no progress before the crash"
        group.primary.kill()
        assert load.wait(failures=1), "no call noticed that the primary was gone"
        down = len(load.acknowledged)
        assert load.wait(acknowledged=down + 5), "the limiter did not come back"
    assert load.unexpected == []
    assert group.primary_port() == group.replica.port
    promoted = redis.Redis(port=group.replica.port)
    try:
        assert promoted.info("replication")["role"] == "master"
        assert spent_nano(promoted, "p", "b") >= before
    finally:
        promoted.close()
    [state] = lim.status("p")  # answered by the new primary
    assert round(state.spent_usd * 1e9) >= before
    # A reservation acknowledged after the failover is settled once there (idempotent).
    assert lim.settle("p", load.acknowledged[-1], **USAGE).first is False
    lim.close()

    async def after_failover() -> None:
        async with AsyncLimiter.from_url(group.url) as alim:
            r = await alim.reserve("p", "gpt-4o", est_tokens=10)
            assert await r.release()

    asyncio.run(after_failover())
