"""The checks of ``doctor`` (one function each), what each finding means for spend."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prism_limiter.cli._common import call, guarded, text
from prism_limiter.engine import _scripts
from prism_limiter.engine._keys import global_policy_key
from prism_limiter.errors import BackendUnavailable, PrismLimiterError

Status = Literal["ok", "note", "finding"]


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    status: Status
    found: str
    meaning: str


def info(client: Any, section: str) -> dict[str, str]:
    """One ``INFO`` section, every value as text (redis-py parses them into numbers)."""
    parsed: dict[str, Any] = guarded(client.info, section)
    return {k: str(v) for k, v in parsed.items()}


def config(client: Any, name: str) -> str | None:
    """One ``CONFIG GET`` value; None where CONFIG is renamed or not permitted."""
    try:
        reply = call(client, "CONFIG", "GET", name)
    except BackendUnavailable:
        raise
    except PrismLimiterError:
        return None
    if isinstance(reply, dict):
        value = reply.get(name, reply.get(name.encode()))
        return text(value) if value is not None else None
    return text(reply[1]) if len(reply) > 1 else None


def version(server: dict[str, str]) -> Check:
    found = server.get("redis_version", "?")
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts < (6, 2):
        return Check(
            "version",
            "finding",
            f"Redis {found}",
            "the scripts need Redis 6.2 or later: reserves fail here",
        )
    return Check("version", "ok", f"Redis {found}", "the scripts run (6.2 or later)")


def memory(client: Any, mem: dict[str, str]) -> Check:
    policy = config(client, "maxmemory-policy")
    limit, used = int(mem.get("maxmemory", "0") or 0), int(mem.get("used_memory", "0") or 0)
    if policy is None:
        return Check(
            "maxmemory-policy",
            "note",
            "unknown (CONFIG not permitted)",
            "cannot tell whether Redis may evict budgets; make sure it is noeviction",
        )
    if policy.startswith("allkeys-"):
        return Check(
            "maxmemory-policy",
            "finding",
            policy,
            "Redis may evict a budget hash and reset its spend to 0: the library"
            " refuses this server (BackendUnavailable); set noeviction",
        )
    if policy.startswith("volatile-"):
        return Check(
            "maxmemory-policy",
            "finding",
            policy,
            "budgets and holds have no TTL and stay, but the attribution counters"
            " (usage:<day>) can be evicted: reports and FOCUS exports may"
            " under-count; set noeviction",
        )
    if limit and used > 0.9 * limit:
        return Check(
            "maxmemory-policy",
            "finding",
            f"{policy}, {used / limit:.0%} of maxmemory",
            "nearly full: writes will be refused (OOM) and reserves fail closed",
        )
    cap = f", maxmemory {limit:,} bytes" if limit else ", no maxmemory"
    return Check(
        "maxmemory-policy",
        "ok",
        policy + cap,
        "nothing is evicted: a full Redis refuses writes, so a reserve fails instead of"
        " forgetting spend",
    )


def persistence(client: Any, pers: dict[str, str]) -> Check:
    if pers.get("aof_enabled") != "1":
        snap = "RDB snapshots" if config(client, "save") else "no persistence"
        return Check(
            "persistence",
            "finding",
            f"AOF off ({snap})",
            "a restart loses the spend booked since the last snapshot (or all of it):"
            " budgets restart low and can be overspent; enable appendonly",
        )
    fsync = config(client, "appendfsync") or "?"
    if fsync == "always":
        return Check(
            "persistence",
            "ok",
            "AOF, appendfsync always",
            "an acknowledged settle survives a crash (kill -9)",
        )
    if fsync == "everysec":
        return Check(
            "persistence",
            "note",
            "AOF, appendfsync everysec",
            "a crash can lose about a second of acknowledged reserves and settles",
        )
    return Check(
        "persistence",
        "finding",
        f"AOF, appendfsync {fsync}",
        "the OS decides when to write: a crash can lose many seconds of booked spend",
    )


def replication(repl: dict[str, str]) -> Check:
    role = repl.get("role", "?")
    if role != "master":
        return Check(
            "replication",
            "finding",
            f"role {role}",
            "a replica is read-only: every reserve and settle fails; use the primary",
        )
    replicas = int(repl.get("connected_slaves", "0") or 0)
    if replicas:
        return Check(
            "replication",
            "note",
            f"primary with {replicas} replica(s)",
            "replication is asynchronous: a failover can lose acknowledged writes"
            " (spend booked just before it)",
        )
    return Check(
        "replication",
        "ok",
        "primary, no replicas",
        "one copy: its persistence is the only protection",
    )


def cluster(clus: dict[str, str], url: str) -> Check:
    if clus.get("cluster_enabled") == "1":
        if "+cluster" not in url.partition("://")[0]:
            return Check(
                "cluster",
                "finding",
                "cluster mode, but a single-node URL",
                "use redis+cluster://: a plain client fails on keys of other slots",
            )
        return Check(
            "cluster",
            "ok",
            "cluster mode",
            "every key a script touches shares the project's hash tag: one slot",
        )
    return Check("cluster", "ok", "standalone", "every script runs on this one server")


def scripts(client: Any) -> Check:
    try:
        for name in _scripts.NAMES:
            call(client, "SCRIPT", "LOAD", _scripts.source(name))
    except PrismLimiterError as exc:
        return Check(
            "scripts",
            "finding",
            f"{name} does not load: {exc}",
            "no reserve can run: the limiter fails closed (or open, by failure_mode)",
        )
    return Check(
        "scripts",
        "ok",
        f"all {len(_scripts.NAMES)} load",
        "every operation runs as one atomic script",
    )


def clock(client: Any, now: Callable[[], float] = time.time) -> Check:
    before = now()
    seconds, micros = call(client, "TIME")
    after = now()
    skew = int(seconds) + int(micros) / 1e6 - (before + after) / 2
    found = f"{skew:+.3f} s (server minus this host)"
    if abs(skew) >= 86400:
        return Check(
            "clock",
            "finding",
            found,
            "more than a day: the scripts refuse this host (it picks the usage-day"
            " keys); fix its clock",
        )
    if abs(skew) >= 2:
        return Check(
            "clock",
            "note",
            found,
            "periods, leases and rate limits use the server clock, so enforcement"
            " holds; this host's reports and run-out dates are off by that much",
        )
    return Check("clock", "ok", found, "periods, leases and buckets use the server clock")


def policy(client: Any, namespace: str) -> Check:
    version = call(client, "HGET", global_policy_key(namespace), "v")
    if version is None:
        return Check(
            "policy",
            "note",
            f"none stored in namespace {namespace!r}",
            "every reserve is denied no-policy until one is applied",
        )
    return Check(
        "policy",
        "ok",
        f"version {text(version)} in namespace {namespace!r}",
        "workers follow it from their next request",
    )
