"""A 3-primary / 3-replica Redis Cluster: the behaviour, a primary SIGKILLed mid-run, and
``durable_replicas``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _facades import AsyncAsSync
from _load import Load

from prism_limiter import (
    AsyncLimiter,
    BudgetExceeded,
    Limiter,
    NotReplicated,
    Policy,
    RateLimited,
)
from prism_limiter.engine._devserver import DevCluster, DevNode, dev_cluster, redis_server_binary

POLICY = Policy.from_toml(
    """
[defaults]
allow_models = ["gpt-4o"]
[[defaults.budgets]]
id = "b"
usd = 1000.0

[projects.tight]
allow_models = ["gpt-4o"]
[[projects.tight.budgets]]
id = "cap"
usd = 0.001
[[projects.tight.rate_limits]]
id = "slots"
max_concurrent = 2
"""
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[DevCluster]:
    """Three shards of a primary and a replica each. A primary silent for 1 s is failed over,
    and the other shards keep serving meanwhile (``cluster-require-full-coverage no``)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not on PATH")
    with dev_cluster(
        3,
        replicas=1,
        node_timeout_ms=1000,
        extra=("--cluster-require-full-coverage", "no"),
    ) as started:
        yield started


def projects_on(cluster: DevCluster, count: int) -> list[str]:
    """``count`` project names whose slots three different primaries serve."""
    names: dict[int, str] = {}
    for i in range(1000):
        name = f"proj{i}"
        names.setdefault(cluster.primary_for(f"{{{name}}}").port, name)
        if len(names) == count:
            return list(names.values())
    raise AssertionError("the slots are not spread over the primaries")


def rejoin(cluster: DevCluster, node: DevNode) -> None:
    """Start a killed node again: it comes back as a replica of the primary that replaced it."""
    node.start()
    cluster.wait_healthy(deadline_s=120)


def _behaviour(lim: Limiter | AsyncAsSync) -> None:
    lim.apply_policy(POLICY)
    a = lim.reserve("tight", "gpt-4o", est_tokens=100, max_output_tokens=0, tags={"team": "x"})
    z = lim.reserve("tight", "gpt-4o", est_tokens=100, max_output_tokens=0)
    with pytest.raises(RateLimited):
        lim.reserve("tight", "gpt-4o", est_tokens=1, max_output_tokens=0)
    assert z.release() is True
    a.settle(input_tokens=100, output_tokens=0)
    with pytest.raises(BudgetExceeded):
        lim.reserve("tight", "gpt-4o", est_tokens=10_000, max_output_tokens=0)
    [state] = lim.status("tight")
    assert state.spent_usd == pytest.approx(0.00025) and state.held_usd == 0
    report = lim.usage("tight")
    assert report.total.requests == 1 and report.by_tag["team"]["x"].requests == 1
    lim.reserve("elsewhere", "gpt-4o", est_tokens=10).release()  # [defaults], another slot


def test_the_behaviour_on_three_shards_with_replicas(cluster: DevCluster) -> None:
    """reserve, settle, release, budgets, rate limits and usage, on both faces."""
    flush(cluster)
    with Limiter.from_url(cluster.url) as lim:
        _behaviour(lim)
    flush(cluster)
    runner = asyncio.Runner()
    try:
        alim = runner.run(_async_limiter(cluster.url))
        facade = AsyncAsSync(alim, runner)
        _behaviour(facade)
        facade.close()
    finally:
        runner.close()


async def _async_limiter(url: str) -> AsyncLimiter:
    return AsyncLimiter.from_url(url)


def flush(cluster: DevCluster) -> None:
    for port in cluster.shards():
        client = redis.Redis(port=port, socket_timeout=5)
        client.flushall()
        client.close()


def test_a_primary_killed_mid_run(cluster: DevCluster) -> None:
    """SIGKILL the primary serving one project: its calls raise only BackendUnavailable until
    its replica is promoted, then work again; a project on another shard is not disturbed, on
    the same limiter; no call hangs."""
    flush(cluster)
    victim, bystander = projects_on(cluster, 2)
    lim = Limiter.from_url(cluster.url, socket_timeout=1)
    lim.apply_policy(POLICY)
    doomed = cluster.primary_for(f"{{{victim}}}")
    with Load(lim, victim, "v") as hit, Load(lim, bystander, "b") as spared:
        assert hit.wait(acknowledged=5) and spared.wait(acknowledged=5)
        doomed.kill()
        t_kill = time.monotonic()
        assert hit.wait(failures=1), "no call noticed that the primary was gone"
        during = len(spared.acknowledged)
        assert hit.wait(acknowledged=len(hit.acknowledged) + 5), "the project did not recover"
        window_s = time.monotonic() - t_kill
        assert spared.wait(acknowledged=during + 5)
    print(
        f"\nfailover: {hit.failures} calls of {victim} raised BackendUnavailable over"
        f" {window_s:.1f} s; {bystander} settled {len(spared.acknowledged) - during} meanwhile,"
        f" failed {spared.failures}"
    )
    assert hit.unexpected == [] and spared.unexpected == []
    assert spared.failures == 0, "a project on a healthy shard was refused"
    assert cluster.primary_for(f"{{{victim}}}") != doomed
    lim.close()
    rejoin(cluster, doomed)


def same_shard(cluster: DevCluster, count: int) -> list[str]:
    """``count`` project names whose slots one primary serves."""
    first = cluster.primary_for("{durable0}").port
    names = [
        f"durable{i}" for i in range(500) if cluster.primary_for(f"{{durable{i}}}").port == first
    ]
    assert len(names) >= count
    return names[:count]


def states(port: int, project: str, ids: list[str]) -> list[str]:
    """The state letter of each id's hold record on the node at ``port`` ("" if absent);
    a replica is read directly (READONLY)."""
    client: Any = redis.Redis(port=port, socket_timeout=5, single_connection_client=True)
    try:
        client.execute_command("READONLY")
        raw = client.hmget(f"prism:{{{project}}}:holds", ids) if ids else []
    finally:
        client.close()
    return [r.decode()[:1] if r else "" for r in raw]


def test_durable_settles_are_on_the_replica_when_acknowledged(cluster: DevCluster) -> None:
    """With durable_replicas=1 every write waits for the slot's replica: a settle that
    returned is already in the replica's memory, on both faces."""
    flush(cluster)
    [project] = same_shard(cluster, 1)
    primary = cluster.primary_for(f"{{{project}}}").port
    [replica] = cluster.shards()[primary]
    with Limiter.from_url(cluster.url, durable_replicas=1) as lim:
        lim.apply_policy(POLICY)
        ids = []
        for i in range(20):
            r = lim.reserve(project, "gpt-4o", est_tokens=100, reservation_id=f"s{i}")
            r.settle(input_tokens=100, output_tokens=10)
            assert states(replica, project, [r.id]) == ["S"]
            ids.append(r.id)

    async def on_async() -> None:
        async with AsyncLimiter.from_url(cluster.url, durable_replicas=1) as alim:
            for i in range(20):
                r = await alim.reserve(project, "gpt-4o", est_tokens=100, reservation_id=f"a{i}")
                await r.settle(input_tokens=100, output_tokens=10)
                assert states(replica, project, [r.id]) == ["S"]
            with pytest.raises(NotReplicated) as exc:  # the shard has one replica, not two
                async with AsyncLimiter.from_url(
                    cluster.url, durable_replicas=2, durable_timeout_s=0.05
                ) as two:
                    await two.settle(project, "a0", input_tokens=100, output_tokens=10)
            assert (exc.value.acknowledged, exc.value.wanted) == (1, 2)

    asyncio.run(on_async())


def test_durable_writes_survive_a_failover(cluster: DevCluster) -> None:
    """SIGKILL the primary under two loads on its shard, one with durable_replicas=1 and one
    without. Every settle acknowledged with it is on the promoted replica; while the shard has
    no replica its writes raise NotReplicated (a BackendUnavailable), and once the old primary
    rejoins as a replica they succeed again. How many acknowledged settles the other load
    lost is measured, not asserted (asynchronous replication may lose the last ones)."""
    flush(cluster)
    careful, quick = same_shard(cluster, 2)
    doomed = cluster.primary_for(f"{{{careful}}}")
    durable = Limiter.from_url(
        cluster.url, socket_timeout=1, breaker_cooldown_s=0.5, durable_replicas=1
    )
    plain = Limiter.from_url(cluster.url, socket_timeout=1, breaker_cooldown_s=0.5)
    durable.apply_policy(POLICY)
    with Load(durable, careful, "d") as d, Load(plain, quick, "n") as n:
        assert d.wait(acknowledged=20) and n.wait(acknowledged=20)
        doomed.kill()
        assert d.wait(failures=1) and n.wait(failures=1)
        cluster.wait_healthy()  # the replica was promoted: the shard has no replica now
        promoted = cluster.primary_for(f"{{{careful}}}")
        assert promoted != doomed and cluster.shards()[promoted.port] == []
        acked_plain = len(n.acknowledged)
        assert n.wait(acknowledged=acked_plain + 5), "the plain load did not recover"
        not_replicated = d.failures
        assert d.wait(failures=not_replicated + 3), "durable writes went on without a replica"
        rejoin(cluster, doomed)
        resumed = len(d.acknowledged)
        assert d.wait(acknowledged=resumed + 5), "durable writes did not resume"
    assert d.unexpected == [] and n.unexpected == []
    durable_states = states(promoted.port, careful, d.acknowledged)
    assert durable_states.count("S") == len(d.acknowledged), "an acknowledged settle was lost"
    before = n.acknowledged[:acked_plain]
    plain_states = states(promoted.port, quick, before)
    lost = len(before) - plain_states.count("S")
    print(
        f"\ndurable_replicas=1: {len(d.acknowledged)} settles acknowledged, 0 lost,"
        f" {d.failures} calls refused; without: {lost} of {len(before)} acknowledged before"
        " the failover lost"
    )
    [state] = durable.status(careful)
    assert state.spent_usd > 0
    durable.close()
    plain.close()
