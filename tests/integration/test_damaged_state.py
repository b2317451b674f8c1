"""No script fails after its first write, whatever it finds stored.

Every field of every budget and rate-limit instance, every field of every hold record and
override record, and every field of the audit stream's head (seq, chain, flood windows) is in
turn removed or overwritten with a malformed value; then each operation runs. Each must
either complete, leaving the ledger readable (held and spent are non-negative integers), or
fail having changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from prism_limiter import Limiter, LimitExceeded, Policy, PrismLimiterError

POLICY = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "month"
usd = 10.0
warn_at = [0.5, 0.8]
[[projects.p.budgets]]
id = "per-customer"
usd = 1.0
period = "day"
split_by = "customer"
[[projects.p.rate_limits]]
id = "r"
rpm = 600
tpm = 100000
max_concurrent = 10
split_by = "customer"
"""
BAD_VALUES = (None, "x", "1.5", "-0", "-7", "99999999999999999999")
PART_BAD_VALUES = (None, "x", "-7", "99999999999999999999")  # for each part of a packed value
FS = "\x1f"
TAGS = {"customer": "a"}
Op = Callable[[Limiter], object]

OPERATIONS: dict[str, Op] = {
    "reserve": lambda lim: lim.reserve("p", "gpt-4o", est_tokens=10, tags=TAGS).id,
    "replay": lambda lim: lim.reserve("p", "gpt-4o", est_tokens=10, reservation_id="live"),
    "settle": lambda lim: lim.settle("p", "live", input_tokens=5, output_tokens=5),
    "release": lambda lim: lim.release("p", "live"),
    "late-settle": lambda lim: lim.settle("p", "released", input_tokens=5, output_tokens=5),
    "sweep": lambda lim: lim.sweep("p"),
    "status": lambda lim: lim.status("p"),
    "denied": lambda lim: lim.try_reserve("p", "gpt-4o", est_tokens=10**8, tags=TAGS).allowed,
    "revoke": lambda lim: lim.revoke_override(
        "p", "per-customer", split_value="a", actor="x", reason="y"
    ),
    "list-overrides": lambda lim: lim.list_overrides("p"),
    "verify-audit": lambda lim: lim.verify_audit("p"),
    "override": lambda lim: lim.grant_override(
        "p",
        "per-customer",
        split_value="a",
        usd=1,
        ttl_s=60,
        requested_by="x",
        approved_by="z",
        reason="y",
    ),
}


@pytest.fixture(scope="module")
def scene(redis_url: str) -> Iterator[tuple[Limiter, Any, dict[bytes, bytes]]]:
    """One project with a live hold, a released one and an overdue one, dumped for reuse."""
    client: Any = redis.Redis.from_url(redis_url, socket_timeout=5)
    client.flushall()
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml(POLICY))
    lim.reserve("p", "gpt-4o", est_tokens=100, tags=TAGS, reservation_id="live")
    lim.reserve("p", "gpt-4o", est_tokens=100, tags=TAGS, reservation_id="released").release()
    lim.reserve("p", "gpt-4o", est_tokens=100, tags=TAGS, reservation_id="overdue")
    lim.settle(
        "p",
        lim.reserve("p", "gpt-4o", est_tokens=100, tags=TAGS).id,
        input_tokens=9,
        output_tokens=9,
    )
    lim.grant_override(
        "p",
        "per-customer",
        split_value="a",
        usd=1,
        ttl_s=600,
        requested_by="x",
        approved_by="z",
        reason="y",
    )
    for _ in range(2):  # a flood window is open, with one denial counted in it
        assert not lim.try_reserve("p", "gpt-4o", est_tokens=10**8, tags=TAGS).allowed
    client.zadd("prism:{p}:leases", {"overdue": 0})  # its lease has run out
    dump = {key: client.dump(key) for key in client.keys("*")}
    yield lim, client, dump
    lim.close()
    client.close()


def _restore(client: Any, dump: dict[bytes, bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.flushall()
    for key, value in dump.items():
        pipe.restore(key, 0, value)
    pipe.execute()


def _snapshot(client: Any) -> dict[bytes, Any]:
    """Every key's content (not its DUMP: a read may rehash a hash and reorder its bytes)."""
    keys = sorted(client.keys("*"))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = [k.decode() for k in pipe.execute()]
    reads = {"hash": "hgetall", "zset": "zrange", "stream": "xrange", "set": "smembers"}
    for key, kind in zip(keys, kinds, strict=True):
        if kind == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
        else:
            getattr(pipe, reads.get(kind, "get"))(key)
    return dict(zip(keys, pipe.execute(), strict=True))


def _parts(value: str, sep: str, bad: str | None, i: int) -> str:
    """``value`` split at ``sep`` with part ``i`` replaced by ``bad`` (None: cut from there)."""
    parts = value.split(sep)
    if bad is None:
        return sep.join(parts[:i])
    return sep.join([*parts[:i], bad, *parts[i + 1 :]])


def _separator(field: bytes) -> str:
    """How a stored value is packed (README, Redis layout)."""
    if field.endswith(b"|c") or len(field) == 16:  # a config, an override record
        return FS
    return "," if field.endswith(b"|cfg") else ":"


def _cases(client: Any, dump: dict[bytes, bytes]) -> Iterator[tuple[str, Callable[[], None]]]:
    """(description, corrupt) for every stored field, every part of it, every bad value."""
    _restore(client, dump)
    budgets = "prism:{p}:budgets"
    for field in sorted(client.hkeys(budgets)):
        value = client.hget(budgets, field).decode()
        sep = _separator(field)
        for bad in BAD_VALUES:
            yield f"budgets {field!r} = {bad!r}", _set_field(client, budgets, field, bad)
        for bad in PART_BAD_VALUES:
            for i in range(len(value.split(sep))):
                damaged = _parts(value, sep, bad, i)
                yield (
                    f"budgets {field!r}[{i}] = {bad!r}",
                    _set_field(client, budgets, field, damaged),
                )
    for key in ("prism:{p}:audit:head", "prism:{p}:overrides"):
        fields = sorted(client.hkeys(key))
        assert fields, key
        for field in fields:
            value = client.hget(key, field).decode()
            sep = _separator(field)
            for bad in BAD_VALUES:
                yield f"{key} {field!r} = {bad!r}", _set_field(client, key, field, bad)
            for bad in PART_BAD_VALUES:
                for i in range(len(value.split(sep))):
                    damaged = _parts(value, sep, bad, i)
                    yield f"{key} {field!r}[{i}] = {bad!r}", _set_field(client, key, field, damaged)
    holds = "prism:{p}:holds"
    for rid in (b"live", b"released", b"overdue"):
        record = client.hget(holds, rid)
        assert record is not None
        for i in range(len(record.decode().split(FS))):
            for bad in PART_BAD_VALUES:
                damaged = _parts(record.decode(), FS, bad, i)
                yield f"record {rid!r}[{i}] = {bad!r}", _set_field(client, holds, rid, damaged)


def _set_field(client: Any, key: str, field: bytes, value: str | None) -> Callable[[], None]:
    def corrupt() -> None:
        if value is None:
            client.hdel(key, field)
        else:
            client.hset(key, field, value)

    return corrupt


def _ledger_readable(client: Any, untouched: dict[bytes, bytes]) -> None:
    """Every amount a script wrote is a well-formed integer field; held and spent >= 0."""
    for field, value in client.hgetall("prism:{p}:budgets").items():
        if b"|" in field or untouched.get(field) == value:
            continue
        parts = value.decode().split(":")
        assert all(p.lstrip("-").isdigit() for p in parts if p), (field, value)
        if not field.startswith(b"r:"):
            assert int(parts[0]) >= 0 and int(parts[1]) >= 0, (field, value)


def test_no_script_fails_after_a_write(
    scene: tuple[Limiter, Any, dict[bytes, bytes]],
) -> None:
    """Each operation on each damaged field completes consistently or changes nothing."""
    lim, client, dump = scene
    cases = list(_cases(client, dump))
    assert len(cases) > 300
    failures = []
    for name, op in OPERATIONS.items():
        for description, corrupt in cases:
            _restore(client, dump)
            corrupt()
            before = _snapshot(client)
            damaged = client.hgetall("prism:{p}:budgets")
            try:
                op(lim)
            except LimitExceeded:
                pass  # a denial is a decision: it is audited like any other
            except PrismLimiterError as exc:
                if _snapshot(client) != before:
                    failures.append(f"{name} with {description}: {exc} after a write")
                continue
            _ledger_readable(client, damaged)
    assert not failures, "\n".join(failures[:20])
