"""The same scripts on a real 3-master Redis Cluster: one hash tag per project, all keys in KEYS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from prism_limiter import AsyncLimiter, BudgetExceeded, Limiter, Policy, RateLimited
from prism_limiter.engine._devserver import redis_cluster, redis_server_binary

POLICY = Policy.from_toml(
    """
[projects.alpha]
allow_models = ["*"]
[[projects.alpha.budgets]]
id = "cap"
usd = 0.001
[[projects.alpha.rate_limits]]
id = "slots"
max_concurrent = 2
[projects.beta]
allow_models = ["gpt-4o"]
[defaults]
allow_models = ["gpt-4o-mini"]
"""
)


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not on PATH")
    with redis_cluster() as url:
        yield url


def _flush(url: str) -> None:
    client = RedisCluster.from_url(url.replace("redis+cluster", "redis"))
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    client.close()


def test_projects_live_in_different_slots() -> None:
    assert key_slot(b"alpha") != key_slot(b"beta")


def test_sync_on_cluster(cluster_url: str) -> None:
    """reserve/settle/release/status/usage/sweep, budgets and rate limits, defaults."""
    _flush(cluster_url)
    with Limiter.from_url(cluster_url) as lim:
        lim.apply_policy(POLICY)
        a = lim.reserve(
            "alpha", "gpt-4o", est_tokens=100, max_output_tokens=0, tags={"customer": "a}{b"}
        )
        z = lim.reserve("alpha", "gpt-4o", est_tokens=100, max_output_tokens=0)
        with pytest.raises(RateLimited):
            lim.reserve("alpha", "gpt-4o", est_tokens=1, max_output_tokens=0)
        z.release()
        b = lim.reserve("alpha", "gpt-4o", est_tokens=100, max_output_tokens=0, ttl_s=0.1)
        a.settle(input_tokens=100, output_tokens=0)
        time.sleep(0.15)  # b's lease ends on the server clock
        assert lim.sweep("alpha") == 1
        assert b.release() is False
        with pytest.raises(BudgetExceeded):
            lim.reserve("alpha", "gpt-4o", est_tokens=1000, max_output_tokens=0)
        lim.reserve("beta", "gpt-4o", est_tokens=1).release()
        lim.reserve("newcomer", "gpt-4o-mini", est_tokens=1).release()  # [defaults]
        [status] = lim.status("alpha")
        assert status.spent_usd == pytest.approx(0.0005) and status.held_usd == 0
        assert lim.usage("alpha").total.requests == 2  # one settled, one expired and charged


def test_async_on_cluster(cluster_url: str) -> None:
    _flush(cluster_url)

    async def main() -> None:
        async with AsyncLimiter.from_url(cluster_url) as lim:
            await lim.apply_policy(POLICY)
            async with await lim.reserve("beta", "gpt-4o", est_tokens=10) as r:
                s = await r.settle(input_tokens=10, output_tokens=1)
            assert s.first and s.cost_usd > 0
            assert (await lim.usage("beta")).total.requests == 1

    asyncio.run(main())
