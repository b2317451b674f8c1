"""The typed audit reader: every event the scripts write parses into its struct, and
``read_audit`` reads (and follows) a stream, sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prism_limiter import AsyncLimiter, InvalidRequest, Limiter, Policy, audit

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.p]
allow_models = ["gpt-4o", "mystery-model"]
deny_models = ["*opus*"]
on_unknown_price = "allow"
default_max_output_tokens = 0
[[projects.p.budgets]]
id = "daily"
usd = 0.1
period = "day"
warn_at = [0.5]
[[projects.p.budgets]]
id = "trial"
usd = 0.0001
mode = "shadow"
[[projects.p.rate_limits]]
id = "slow"
rpm = 1
models = ["mystery-model"]
[[projects.p.rate_limits]]
id = "watch"
max_concurrent = 1
mode = "shadow"
"""
)
DOC = Path(__file__).parents[2] / "docs" / "AUDIT.md"


def every_event(lim: Limiter) -> None:
    """A history with at least one entry of every event the scripts write."""
    lim.apply_policy(POLICY)
    lim.reserve("p", "gpt-4o", est_tokens=100).settle(input_tokens=20_000, output_tokens=0)
    lim.try_reserve("p", "claude-opus-4", est_tokens=1)  # model.denied
    lim.try_reserve("p", "gpt-4o", est_tokens=100_000)  # budget.blocked
    lim.reserve("p", "mystery-model", est_tokens=1).release()  # price.unknown
    lim.try_reserve("p", "mystery-model", est_tokens=1)  # rate.limited
    grant = lim.grant_override(
        "p", "daily", usd=1, ttl_s=60, requested_by="ann", approved_by="cfo", reason="r"
    )
    held = [lim.reserve("p", "gpt-4o", est_tokens=25_000) for _ in range(2)]  # override.used,
    for r in held:  # budget.would_block, rate.would_limit
        r.release()
    lim.revoke_override("p", "daily", actor="cfo", reason="done")  # override.revoked
    lim.grant_override(
        "p", "daily", usd=1, ttl_s=0.05, requested_by="ann", approved_by="cfo", reason="short"
    )
    time.sleep(0.06)  # past its end (a lower bound)
    lim.list_overrides("p")  # override.expired
    r = lim.reserve("p", "gpt-4o", est_tokens=10, ttl_s=0.01)
    time.sleep(0.02)
    lim.sweep("p")  # hold.expired
    lim.settle("p", r.id, input_tokens=10, output_tokens=0)  # settle.late
    lim.settle("p", "elsewhere", model="gpt-4o", input_tokens=1, output_tokens=0)
    lim.client.hset("prism:{p}:holds", "broken", "?")
    lim.client.zadd("prism:{p}:leases", {"broken": 0})
    lim.sweep("p")  # hold.damaged
    lim.remove_policy("p")  # policy.removed
    assert grant.id


def test_every_event_parses_into_its_struct(redis_url: str) -> None:
    lim = Limiter.from_url(redis_url)
    every_event(lim)
    events = list(lim.read_audit("p"))
    kinds = {type(e) for e in events}
    assert audit.UnknownEvent not in kinds, [e for e in events if type(e) is audit.UnknownEvent]
    assert {cls.EVENT for cls in kinds} == set(audit.EVENTS)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    by = {type(e): e for e in events}
    blocked = by[audit.BudgetBlocked]
    assert isinstance(blocked, audit.BudgetBlocked)
    assert blocked.budget == "daily" and blocked.split is None and blocked.count == 1
    assert blocked.amount_usd > 0 and blocked.tags == {}
    expired = by[audit.OverrideExpired]
    assert isinstance(expired, audit.OverrideExpired)
    assert expired.requested_by == "ann" and expired.approved_by == "cfo" and expired.uses == 0
    revoked = by[audit.OverrideRevoked]
    assert isinstance(revoked, audit.OverrideRevoked)
    assert revoked.uses == 2 and revoked.actor == "cfo" and revoked.grant_reason == "r"
    assert all(e.schema == audit.SCHEMA and e.project == "p" for e in events)
    lim.close()


def test_since_an_id_or_a_time(redis_url: str) -> None:
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(POLICY)
    for n in range(5):
        lim.try_reserve("p", "claude-opus-4", est_tokens=1, tags={"n": str(n)})
    events = list(lim.read_audit("p"))
    assert [e.seq for e in lim.read_audit("p", since=events[2].id)] == [4, 5, 6]
    assert len(list(lim.read_audit("p", since=events[2].ts))) >= 4  # from that millisecond
    assert list(lim.read_audit("p", since=datetime.now(UTC) + timedelta(days=1))) == []
    with pytest.raises(InvalidRequest):
        lim.read_audit("p", since="yesterday")
    with pytest.raises(InvalidRequest):
        lim.read_audit("no such project!")
    lim.close()


def test_follow_waits_for_new_entries(redis_url: str) -> None:
    """A following reader gets the entries written after it reached the end, in order."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(POLICY)
    seen: list[int] = []
    reached_end = threading.Event()
    done = threading.Event()

    def follow() -> None:
        reader = Limiter.from_url(redis_url)
        for event in reader.read_audit("p", follow=True):
            seen.append(event.seq)
            reached_end.set()
            if len(seen) == 4:
                break
        reader.close()
        done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert reached_end.wait(30)  # the policy entry: it is reading
    for n in range(3):
        lim.try_reserve("p", "claude-opus-4", est_tokens=1, tags={"n": str(n)})
    assert done.wait(30)
    assert seen == [1, 2, 3, 4]
    lim.close()


def test_async_read_and_follow(redis_url: str) -> None:
    async def main() -> list[int]:
        async with AsyncLimiter.from_url(redis_url) as lim:
            await lim.apply_policy(POLICY)
            assert [e.event async for e in lim.read_audit("p")] == ["policy.applied"]
            seen: list[int] = []

            async def follow() -> None:
                async for event in lim.read_audit("p", follow=True):
                    seen.append(event.seq)
                    if len(seen) == 3:
                        return

            task = asyncio.ensure_future(follow())
            for n in range(2):
                await lim.try_reserve("p", "claude-opus-4", est_tokens=1, tags={"n": str(n)})
            await asyncio.wait_for(task, 30)
            return seen

    assert asyncio.run(main()) == [1, 2, 3]


def test_docs_describe_every_event_and_field() -> None:
    """docs/AUDIT.md has a section per event listing every field of its struct."""
    text = DOC.read_text()
    for event, cls in audit.EVENTS.items():
        head = f"### `{event}`"
        assert head in text, event
        section = text.split(head, 1)[1].split("\n### ", 1)[0]
        for name in cls.__struct_fields__:
            if name not in audit.AuditEvent.__struct_fields__:
                assert f"`{name}`" in section, (event, name)
    for name in audit.AuditEvent.__struct_fields__:
        assert f"`{name}`" in text
