"""What kill -9 of redis-server loses of what it acknowledged, per AOF fsync policy.

Writer threads reserve and settle under their own ids (every fourth settle above its hold, so
that it writes an audit entry) and keep every acknowledged call. redis-server is killed -9
mid-run, ``KILLS`` times (one every 6 s of ``--soak``), restarted from its AOF, and the writers
carry on by themselves.
Afterwards every acknowledged reserve must have its hold record, every acknowledged settle its
settled record, every acknowledged over-estimate its ``settle.over_estimate`` entry. With
``appendfsync always`` nothing may be missing (asserted). With ``everysec`` the missing ones are
counted and printed, not asserted, next to how many acknowledgements came in the last second
before each kill: what a crash of the machine (not of the process) could have taken. Under
both, whatever was lost went whole: the ledger read back is consistent (spent is the cost of
the settled records, held the holds of the open ones) and the audit chain verifies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from _helpers import held_nano, spent_nano, wait_until
from _servers import DurableServer

from prism_limiter import BackendUnavailable, Limiter, Policy, audit

POLICY = """
[projects.p]
allow_models = ["m"]
[projects.p.prices."m"]
input_mtok = 1.0
output_mtok = 1.0
[[projects.p.budgets]]
id = "b"
usd = 100000.0
"""
WRITERS = 4
KILLS = 10
ACKS_PER_ROUND = 300  # acknowledged settles before each kill, and after the last restart
DEADLINE_S = 120  # for any of these to happen: only a hang gets near it
UNDER = {"input_tokens": 500, "output_tokens": 50}  # 550,000 nUSD, under the 1.1M hold
OVER = {"input_tokens": 1500, "output_tokens": 100}  # 1,600,000 nUSD: settle.over_estimate


@dataclass
class Acks:
    """What the server acknowledged, as the writers saw it."""

    reserved: list[str] = field(default_factory=list)
    settled: list[tuple[str, bool, float]] = field(default_factory=list)  # id, over, when
    failed: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)


def _writer(lim: Limiter, acks: Acks, name: str) -> None:
    n = 0
    while not acks.stop.is_set():
        n += 1
        rid, over = f"{name}-{n}", n % 4 == 0
        try:
            r = lim.reserve("p", "m", est_tokens=1000, max_output_tokens=100, reservation_id=rid)
            acks.reserved.append(rid)
            r.settle(**(OVER if over else UNDER))
            acks.settled.append((rid, over, time.monotonic()))
        except BackendUnavailable:
            acks.failed.set()
            time.sleep(0.01)  # the server is down: do not spin
        except Exception as exc:  # a finding: kept and reported
            acks.errors.append(repr(exc))


def _more_settles(acks: Acks, what: str) -> None:
    due = len(acks.settled) + ACKS_PER_ROUND
    wait_until(lambda: len(acks.settled) >= due, what, DEADLINE_S)


def _run(server: DurableServer, kills_due: int) -> tuple[Acks, list[float], int]:
    """Load with ``kills_due`` kill -9 and restarts; the acknowledgements, the kill times and
    the writes Redis postponed behind a slow fsync (``aof_delayed_fsync``)."""
    lim = Limiter.from_url(server.url, socket_timeout=2, retries=0, breaker_failures=10**6)
    lim.apply_policy(Policy.from_toml(POLICY))
    acks = Acks()
    writers = [threading.Thread(target=_writer, args=(lim, acks, f"w{i}")) for i in range(WRITERS)]
    for t in writers:
        t.start()
    kills: list[float] = []
    delayed = 0
    try:
        for _ in range(kills_due):
            _more_settles(acks, "no progress before a kill")
            client: Any = redis.Redis.from_url(server.url, socket_timeout=5)
            delayed += int(client.info("persistence").get("aof_delayed_fsync", 0))
            client.close()
            acks.failed.clear()
            kills.append(time.monotonic())
            server.kill9()
            wait_until(acks.failed.is_set, "the writers never saw the server go", DEADLINE_S)
            server.start()
        _more_settles(acks, "the writers did not reconnect by themselves")
    finally:
        acks.stop.set()
        for t in writers:
            t.join(60)
        lim.close()
    return acks, kills, delayed


@pytest.mark.slow
@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_kill9_loses_what_the_fsync_policy_allows(
    tmp_path: Path, appendfsync: str, soak_s: float | None
) -> None:
    """always: every acknowledged reserve, settle and audit entry survives kill -9; everysec:
    what is lost is measured. Either way the ledger read back is consistent."""
    server = DurableServer(tmp_path, appendfsync=appendfsync)
    server.start()
    try:
        acks, kills, delayed = _run(server, KILLS if soak_s is None else int(soak_s // 6) + 1)
        client: Any = redis.Redis.from_url(server.url, socket_timeout=5)
        lim = Limiter.from_url(server.url)
        records = [v.decode().split("\x1f") for v in client.hgetall("prism:{p}:holds").values()]
        states = {k.decode(): v.decode()[0] for k, v in client.hgetall("prism:{p}:holds").items()}
        entries = {e.rid for e in lim.read_audit("p") if isinstance(e, audit.SettleOverEstimate)}
        lost_reserves = [rid for rid in acks.reserved if rid not in states]
        lost_settles = [rid for rid, _, _ in acks.settled if states.get(rid) != "S"]
        lost_entries = [rid for rid, over, _ in acks.settled if over and rid not in entries]
        exposed = sum(1 for _, _, t in acks.settled if any(k - 1 <= t < k for k in kills))
        print(
            f"\nappendfsync {appendfsync}: {len(kills)} kill -9, {len(acks.reserved)} reserves"
            f" and {len(acks.settled)} settles acknowledged"
            f" ({sum(over for _, over, _ in acks.settled)} audited over-estimates);"
            f" lost: {len(lost_reserves)} reserves, {len(lost_settles)} settles,"
            f" {len(lost_entries)} audit entries; {exposed} settles acknowledged in the last"
            f" second before a kill; {delayed} writes postponed behind a slow fsync"
        )
        assert not acks.errors, acks.errors[:3]
        # Whatever was lost went whole: the ledger is the sum of the records that are there.
        assert spent_nano(client, "p", "b") == sum(int(r[11]) for r in records if r[0] == "S")
        assert held_nano(client, "p", "b") == sum(int(r[1]) for r in records if r[0] == "H")
        assert entries <= {rid for rid, state in states.items() if state == "S"}
        assert lim.verify_audit("p").ok
        if appendfsync == "always":
            assert (lost_reserves, lost_settles, lost_entries) == ([], [], [])
        lim.close()
        client.close()
    finally:
        server.stop()
