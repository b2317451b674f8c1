"""Redis itself fails: killed -9 and restarted from its AOF, scripts flushed, least privilege."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _helpers import held_nano, spent_nano
from _servers import DurableServer

from prism_limiter import BackendUnavailable, Limiter, Policy, PrismLimiterError

POLICY = """
[projects.p]
allow_models = ["gpt-4o"]
[[projects.p.budgets]]
id = "b"
usd = 1000.0
"""
USAGE: dict[str, Any] = {"input_tokens": 900, "output_tokens": 90}


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableServer]:
    server = DurableServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_kill9_under_load_loses_no_acknowledged_write(durable: DurableServer) -> None:
    """kill -9 mid-run, restart from AOF (appendfsync always): every acknowledged settle is
    there; every call whose outcome was lost is resolved by retrying its id, booked once."""
    lim = Limiter.from_url(durable.url, socket_timeout=2, retries=0, breaker_failures=10**6)
    lim.apply_policy(Policy.from_toml(POLICY))
    done, failed, after = threading.Event(), threading.Event(), threading.Event()
    stop = threading.Event()
    attempted: list[str] = []
    acknowledged: list[str] = []
    errors: list[str] = []
    restarted = threading.Event()

    def worker() -> None:
        i = 0
        while not stop.is_set():
            rid = f"job-{i}"
            i += 1
            attempted.append(rid)
            try:
                lim.reserve("p", "gpt-4o", est_tokens=1000, reservation_id=rid).settle(**USAGE)
            except BackendUnavailable:
                failed.set()
                continue
            except PrismLimiterError as exc:  # any other failure is a finding: keep it
                errors.append(repr(exc))
                continue
            acknowledged.append(rid)
            if len(acknowledged) >= 20:
                done.set()
            if restarted.is_set():
                after.set()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert done.wait(60), "no progress before the crash"
        durable.kill9()
        assert failed.wait(60), "the worker never saw the server go"
        durable.start()
        restarted.set()
        assert after.wait(60), "the worker did not reconnect by itself"
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors[:3]
    lost = [rid for rid in attempted if rid not in acknowledged]
    for rid in lost:  # outcome unknown: the same id settles it, exactly once
        lim.settle("p", rid, model="gpt-4o", **USAGE)
    client = redis.Redis.from_url(durable.url)
    cost = lim.settle("p", acknowledged[0], **USAGE).cost_usd  # a repeat: the first cost
    assert spent_nano(client, "p", "b") == round(cost * 1e9) * len(attempted)
    assert held_nano(client, "p", "b") == 0
    lim.close()


def test_flushed_functions_and_scripts_reload_without_running_twice(
    redis_url: str, rclient: Any
) -> None:
    """FUNCTION FLUSH and SCRIPT FLUSH mid-run: the library reloads by itself; nothing ran twice."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(POLICY))
    holds = []
    for i in range(6):
        if i % 2:
            rclient.function_flush()
            rclient.script_flush()
        holds.append(lim.reserve("p", "gpt-4o", est_tokens=1000).decision.hold_usd)
    assert held_nano(rclient, "p", "b") == round(sum(holds) * 1e9)
    assert rclient.hlen("prism:{p}:holds") == 6


ACL_RULES = (  # the README's "Least privilege" rules, word for word
    "on >s3cret ~prism:* resetchannels -@all"
    " +fcall +fcall_ro +function|load +evalsha +script|load"
    " +time +hget +hmget +hgetall +hset +hdel +hkeys +hexists +del +expire"
    " +zadd +zrem +zrange +zrangebyscore +zcount +zcard +xadd +xrange +xrevrange +xread"
    " +sadd +smembers +scard +sismember +ping +hello"
)


def test_least_privilege_user_runs_everything(redis_url: str, rclient: Any) -> None:
    """The ACL rules the README gives are enough; a user without them gets a clear error."""
    rclient.execute_command("ACL", "SETUSER", "prism", *ACL_RULES.split())
    rclient.execute_command(
        "ACL", "SETUSER", "nobody", "on", ">x", "~*", "-@all", "+hello", "+ping"
    )
    try:
        host = redis_url.split("//", 1)[1]
        lim = Limiter.from_url(f"redis://prism:s3cret@{host}")
        lim.apply_policy(Policy.from_toml(POLICY))
        r = lim.reserve("p", "gpt-4o", est_tokens=1000)
        r.settle(**USAGE)
        assert lim.status("p")[0].spent_usd > 0
        assert lim.usage("p").total.requests == 1
        denied = Limiter.from_url(f"redis://nobody:x@{host}")
        with pytest.raises(PrismLimiterError, match="lacks a permission"):
            denied.reserve("p", "gpt-4o", est_tokens=1000)
    finally:
        rclient.execute_command("ACL", "DELUSER", "prism", "nobody")
