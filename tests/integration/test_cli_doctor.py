"""``doctor`` against the test server, reconfigured per check (and restored)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _cli import cli

from prism_limiter import Limiter, Policy
from prism_limiter.cli._checks import Check, clock, cluster, replication, version

pytestmark = pytest.mark.usefixtures("rclient")


@pytest.fixture
def reconfigure(rclient: Any) -> Iterator[Any]:
    """CONFIG SET for one test; the shared server gets its settings back afterwards."""
    names = ("appendonly", "appendfsync", "maxmemory-policy")
    before = {n: rclient.config_get(n)[n] for n in names}
    yield rclient.config_set
    for name, value in before.items():
        rclient.config_set(name, value)


def _checks(redis_url: str) -> tuple[int, dict[str, dict[str, str]]]:
    done = cli("doctor", "--json", url=redis_url)
    data = json.loads(done.stdout)
    return done.returncode, {c["check"]: c for c in data["checks"]}


def test_doctor_on_the_test_server(redis_url: str, reconfigure: Any) -> None:
    code, checks = _checks(redis_url)
    assert code == 1  # the test server keeps nothing on disk
    assert checks["persistence"]["status"] == "finding"
    assert "restart loses" in checks["persistence"]["meaning"]
    for name in ("version", "maxmemory-policy", "replication", "cluster", "scripts", "clock"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["policy"]["status"] == "note"
    assert checks["scripts"]["found"] == "all 8 load"

    reconfigure("appendonly", "yes")
    reconfigure("appendfsync", "always")
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml('[projects.p]\nallow_models = ["*"]\n'))
    done = cli("doctor", url=redis_url)
    assert done.returncode == 0, done.stdout
    assert "no findings" in done.stdout
    assert "AOF, appendfsync always: an acknowledged settle survives a crash" in done.stdout

    reconfigure("appendfsync", "everysec")
    code, checks = _checks(redis_url)
    assert code == 0 and checks["persistence"]["status"] == "note"


@pytest.mark.parametrize(
    ("policy", "says"),
    [("allkeys-lru", "reset its spend to 0"), ("volatile-ttl", "attribution counters")],
)
def test_an_evicting_redis_is_a_finding(
    redis_url: str, reconfigure: Any, policy: str, says: str
) -> None:
    reconfigure("maxmemory-policy", policy)
    code, checks = _checks(redis_url)
    assert code == 1
    assert checks["maxmemory-policy"]["status"] == "finding"
    assert says in checks["maxmemory-policy"]["meaning"]


def test_unreachable_and_embedded() -> None:
    done = cli("doctor", url="redis://127.0.0.1:1/0")
    assert done.returncode == 3
    done = cli("doctor", url="memory://doc")
    assert done.returncode == 0
    assert "embedded" in done.stdout


class _Time:
    def __init__(self, server_s: float) -> None:
        self.server_s = server_s

    def execute_command(self, *args: Any) -> list[int]:
        assert args == ("TIME",)
        return [int(self.server_s), int(self.server_s % 1 * 1e6)]


def test_clock_skew() -> None:
    assert clock(_Time(1000.0), now=lambda: 1000.0).status == "ok"
    skewed = clock(_Time(1030.0), now=lambda: 1000.0)
    assert skewed.status == "note" and skewed.found.startswith("+30.000 s")
    assert clock(_Time(1000.0), now=lambda: 1000.0 + 2 * 86400).status == "finding"


def test_pure_checks() -> None:
    assert version({"redis_version": "6.0.9"}).status == "finding"
    assert version({"redis_version": "7.2.4"}).status == "ok"
    assert replication({"role": "slave"}).status == "finding"
    assert replication({"role": "master", "connected_slaves": "2"}) == Check(
        "replication",
        "note",
        "primary with 2 replica(s)",
        "replication is asynchronous: a failover can lose acknowledged writes (spend booked"
        " just before it)",
    )
    assert cluster({"cluster_enabled": "1"}, "redis://h:1").status == "finding"
    assert cluster({"cluster_enabled": "1"}, "redis+cluster://h:1").status == "ok"
