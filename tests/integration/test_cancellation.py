"""Cancellation: hundreds of asyncio tasks cancelled mid-flight leak no hold and no slot.

Cancel points are chosen by progress, never by wall time, so the tests mean the same on a fast
machine and on a loaded one: a task is cancelled before it starts, while its reserve, settle or
release script is in flight (a probe in the limiter's I/O cancels the caller as the script is
sent), or inside its block before or after its settle.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any

import pytest
from _helpers import audit, held_nano, rate_state, spent_nano

from prism_limiter import AsyncLimiter, AsyncReservation, InvalidRequest, Policy
from prism_limiter.engine._protocol import Request, Script

POLICY = """
[projects.p]
allow_models = ["*"]
[[projects.p.budgets]]
id = "b"
usd = 1000
[[projects.p.rate_limits]]
id = "slots"
max_concurrent = 1000
"""

# Where a task is cancelled: not at all; before it runs; while its reserve script is in flight;
# inside the block before its settle; inside the block, and again while the release that
# follows is in flight; while its settle script is in flight; inside the block after its settle.
STAGES = ("never", "before", "reserve", "block", "twice", "settle", "settled")
# The script whose sending cancels a task of that stage.
_IN_FLIGHT = {"reserve": "reserve", "twice": "release", "settle": "settle"}

# The request whose context this is: its stage and its task. Reserve and settle run in the
# caller's task; the limiter's own tasks (a shielded release, the background abandon or settle
# of a cancelled caller) inherit the context, so the probe sees whose script it sends.
_CANCEL_AT: ContextVar[tuple[str, asyncio.Task[Any]] | None] = ContextVar("cancel", default=None)


class _Probe(AsyncLimiter):
    """Cancels the calling request as the script of its stage is sent, i.e. while in flight.

    ``turns`` more turns of the event loop pass before the script goes out, so the cancelled
    caller runs on (to its ``aclose()``, say) while the script has not even been sent.
    """

    turns = 0

    async def _io(self, request: Request) -> Any:
        target = _CANCEL_AT.get()
        if target and isinstance(request, Script) and request.name == _IN_FLIGHT.get(target[0]):
            target[1].cancel()
            for _ in range(self.turns):
                await asyncio.sleep(0)
        return await super()._io(request)


class _LateProbe(_Probe):
    turns = 10  # the cancelled caller reaches its aclose() before the script is sent


async def _request(lim: AsyncLimiter, stage: str, form: str, turns: int) -> None:
    task = asyncio.current_task()
    assert task is not None
    _CANCEL_AT.set((stage, task))
    call = lim.reserve("p", "gpt-4o-mini", est_tokens=100)
    # the new form enters the call itself; the old one enters the awaited reservation
    scope: AbstractAsyncContextManager[AsyncReservation] = (
        call if form == "async with" else await call
    )
    async with scope as r:
        for _ in range(turns):  # "the LLM call": a few turns of the loop, other tasks run
            await asyncio.sleep(0)
        if stage in ("block", "twice"):
            task.cancel()
            await asyncio.sleep(0)  # the cancellation lands here, before the settle
        await r.settle(input_tokens=90, output_tokens=10)
        if stage == "settled":
            task.cancel()
            await asyncio.sleep(0)


async def _lifecycle(redis_url: str, form: str, tasks: int) -> Counter[str]:
    """Run ``tasks`` concurrent requests, each cancelled at a stage; return the outcomes."""
    rng = random.Random(3)
    stages = [STAGES[i % len(STAGES)] for i in range(tasks)]
    rng.shuffle(stages)
    lim = _Probe.from_url(redis_url)
    await lim.apply_policy(Policy.from_toml(POLICY))
    running = []
    for stage in stages:
        t = asyncio.ensure_future(_request(lim, stage, form, rng.randrange(4)))
        if stage == "before":
            t.cancel()
        running.append(t)
    results = await asyncio.gather(*running, return_exceptions=True)
    await lim.aclose()  # waits for every reserve, settle and release still in flight
    outcomes: Counter[str] = Counter()
    for stage, result in zip(stages, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            outcomes[f"{stage}: cancelled"] += 1
        elif result is None:
            outcomes[f"{stage}: finished"] += 1
        else:
            raise result
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("form", ["async with", "async with await"])
def test_cancelled_tasks_release_everything(redis_url: str, rclient: Any, form: str) -> None:
    """700 tasks, cancelled before, during and after their reserve and settle: every cancelled
    task ends cancelled, every other finishes, held == 0 and no slot is in use."""
    outcomes = asyncio.run(_lifecycle(redis_url, form, tasks=700))
    expected = {f"{s}: {'finished' if s == 'never' else 'cancelled'}": 100 for s in STAGES}
    assert outcomes == expected
    assert held_nano(rclient, "p", "b") == 0
    assert rate_state(rclient, "p", "r:slots")["holds"] == 0
    assert rclient.zcard("prism:{p}:leases") == 0


def _state(rclient: Any, rid: str) -> bytes:
    record: bytes = rclient.hget("prism:{p}:holds", rid)
    return record.split(b"\x1f")[0]


def test_cancelled_while_reserve_in_flight_releases_when_it_answers(
    redis_url: str, rclient: Any
) -> None:
    """``async with lim.reserve(...)`` cancelled as its script is sent: the task ends cancelled,
    the block never runs, and the hold the reserve took is released once it answers."""
    entered = False

    async def request(lim: AsyncLimiter) -> None:
        nonlocal entered
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("reserve", task))
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="in-flight"):
            entered = True

    async def main() -> None:
        lim = _Probe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert not entered
    assert _state(rclient, "in-flight") == b"R"  # it was held, then released
    assert held_nano(rclient, "p", "b") == 0


def test_cancelled_inside_the_block_releases_shielded(redis_url: str, rclient: Any) -> None:
    """``async with lim.reserve(...)`` cancelled inside the block, and again as the release
    that follows is sent: the release is shielded, so it still lands."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("twice", task))
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="in-block"):
            assert held_nano(rclient, "p", "b") > 0
            task.cancel()
            await asyncio.sleep(0)

    async def main() -> None:
        lim = _Probe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert _state(rclient, "in-block") == b"R"
    assert held_nano(rclient, "p", "b") == 0


def test_aclose_waits_for_a_settle_whose_caller_was_cancelled(redis_url: str, rclient: Any) -> None:
    """A settle whose caller is cancelled before the script even goes out still lands, on the
    hold (the block's exit leaves it to the settle), and ``aclose()`` waits for it: the usage
    is booked."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("settle", task))
        async with lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="r") as r:
            await r.settle(input_tokens=90, output_tokens=10)

    async def main() -> None:
        lim = _LateProbe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert held_nano(rclient, "p", "b") == 0
    assert spent_nano(rclient, "p", "b") > 0
    assert _state(rclient, "r") == b"S"
    assert audit(rclient, "p", "settle.late") == []  # settled, not released and then corrected


def test_a_reserve_that_arrives_after_its_caller_gave_up_takes_nothing(
    redis_url: str, rclient: Any
) -> None:
    """A reserve cancelled in flight may still reach Redis after its id was abandoned (a
    retried send, a slow connection): the id is ended, so it is refused and holds nothing."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("reserve", task))
        await lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="late")

    async def main() -> None:
        lim = _Probe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()  # the abandon has landed
        async with AsyncLimiter.from_url(redis_url) as other:  # the reserve, arriving late
            with pytest.raises(InvalidRequest, match="already ended"):
                await other.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="late")

    asyncio.run(main())
    assert _state(rclient, "late") == b"R"
    assert held_nano(rclient, "p", "b") == 0
    assert rate_state(rclient, "p", "r:slots")["holds"] == 0


class _DroppingProbe(AsyncLimiter):
    """Cancels the calling request as its reserve is about to go out, and never sends it: the
    caller gave up before a byte was written (the reserve may still come later, resent)."""

    async def _io(self, request: Request) -> Any:
        target = _CANCEL_AT.get()
        if target and isinstance(request, Script) and request.name == "reserve":
            target[1].cancel()
            await asyncio.sleep(0)  # the cancellation lands here
        return await super()._io(request)


async def _give_up(lim: AsyncLimiter, project: str, rid: str) -> None:
    """A reserve of ``rid`` whose caller is cancelled before it is sent; the id is abandoned."""

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("reserve", task))
        await lim.reserve(project, "gpt-4o-mini", est_tokens=100, reservation_id=rid)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(request())


def test_a_settle_by_id_of_an_abandoned_id_is_booked(redis_url: str, rclient: Any) -> None:
    """An id abandoned before its reserve ran is ended by a record that names nothing. A later
    settle by id with model= (the call went ahead after all) books the usage like an id the
    project never saw: into the budgets and the attribution, not into nothing."""

    async def main() -> None:
        lim = _DroppingProbe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        await _give_up(lim, "p", "gave-up")
        await lim.aclose()  # the abandon has landed
        assert _state(rclient, "gave-up") == b"R"
        async with AsyncLimiter.from_url(redis_url) as other:
            with pytest.raises(InvalidRequest, match="unknown"):
                await other.settle("p", "gave-up", input_tokens=90, output_tokens=10)
            s = await other.settle(
                "p",
                "gave-up",
                input_tokens=90,
                output_tokens=10,
                model="gpt-4o-mini",
                tags={"team": "a"},
            )
            assert s.first and s.unknown and s.cost_usd > 0
            usage = await other.usage("p")
            assert usage.total.cost_usd == s.cost_usd and usage.total.requests == 1
            assert usage.by_tag["team"]["a"].cost_usd == s.cost_usd
            again = await other.settle("p", "gave-up", input_tokens=90, output_tokens=10)
            assert not again.first and again.cost_usd == s.cost_usd
            with pytest.raises(InvalidRequest, match="already ended"):
                await other.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="gave-up")
        assert spent_nano(rclient, "p", "b") == round(s.cost_usd * 1e9)

    asyncio.run(main())
    assert held_nano(rclient, "p", "b") == 0


ONE_SLOT = """
[projects.q]
allow_models = ["*"]
[[projects.q.rate_limits]]
id = "one"
max_concurrent = 1
"""


def test_an_abandoned_retry_of_a_denied_id_takes_nothing_when_it_arrives(
    redis_url: str, rclient: Any
) -> None:
    """A denied id may be retried (it is decided afresh). If that retry's caller is cancelled
    before it is sent, the abandon must still end the id: a resent reserve arriving later
    would otherwise take a hold (and a slot) that nobody owns."""

    async def main() -> None:
        lim = _DroppingProbe.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(ONE_SLOT))
        first = await lim.reserve("q", "gpt-4o-mini", est_tokens=100)
        denied = await lim.try_reserve("q", "gpt-4o-mini", est_tokens=100, reservation_id="x")
        assert not denied.allowed
        await first.release()
        await _give_up(lim, "q", "x")  # the retry, cancelled before it went out
        await lim.aclose()
        async with AsyncLimiter.from_url(redis_url) as other:  # the retry, arriving late
            with pytest.raises(InvalidRequest, match="already ended"):
                await other.reserve("q", "gpt-4o-mini", est_tokens=100, reservation_id="x")

    asyncio.run(main())
    assert rate_state(rclient, "q", "r:one")["holds"] == 0
    assert rclient.zcard("prism:{q}:leases") == 0


class _SlowAbandon(_DroppingProbe):
    """Holds every abandon back until ``gate`` is set, and logs the order scripts go out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.log: list[str] = []

    async def _io(self, request: Request) -> Any:
        if isinstance(request, Script) and request.name == "release" and request.args[-1] == "a":
            await self.gate.wait()
            self.log.append("abandon sent")
            reply = await super()._io(request)
            self.log.append("abandon answered")
            return reply
        if isinstance(request, Script) and request.name == "reserve" and not _CANCEL_AT.get():
            self.log.append("retry sent")
        return await super()._io(request)


def test_a_retry_with_the_same_id_waits_for_its_abandon(redis_url: str, rclient: Any) -> None:
    """A caller that picks its own id, gives up on a reserve (a timeout) and retries with the
    same id: the retry is sent only once the abandon has landed, so it is refused ("already
    ended") rather than given a hold that the abandon then releases under it."""

    async def main() -> None:
        lim = _SlowAbandon.from_url(redis_url)
        assert isinstance(lim, _SlowAbandon)
        await lim.apply_policy(Policy.from_toml(POLICY))
        await _give_up(lim, "p", "mine")
        retry = asyncio.ensure_future(
            lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="mine")
        )
        await asyncio.sleep(0)  # the retry runs as far as it can
        lim.gate.set()
        with pytest.raises(InvalidRequest, match="already ended"):
            await retry
        await lim.aclose()
        assert lim.log == ["abandon sent", "abandon answered", "retry sent"]

    asyncio.run(main())
    assert _state(rclient, "mine") == b"R"
    assert held_nano(rclient, "p", "b") == 0
    assert rate_state(rclient, "p", "r:slots")["holds"] == 0


def test_a_settle_cancelled_in_flight_keeps_its_hold_until_it_lands(
    redis_url: str, rclient: Any
) -> None:
    """A settle whose caller is cancelled is finished in the background. Leaving the block
    must not release the hold meanwhile: another reserve would take the room it frees, and
    the settle, landing after, would book spend on top of that hold, past the cap."""
    policy = "[projects.c]\nallow_models=['*']\n[[projects.c.budgets]]\nid='cap'\nusd=0.00003\n"

    class _HeldSettle(AsyncLimiter):
        gate: asyncio.Event

        async def _io(self, request: Request) -> Any:
            target = _CANCEL_AT.get()
            if target and isinstance(request, Script) and request.name == "settle":
                target[1].cancel()
                await self.gate.wait()  # the settle goes out once the test says so
            return await super()._io(request)

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CANCEL_AT.set(("settle", task))
        async with lim.reserve("c", "gpt-4o-mini", est_tokens=100, max_output_tokens=0) as r:
            await r.settle(input_tokens=100, output_tokens=0)

    async def main() -> None:
        lim = _HeldSettle.from_url(redis_url)
        assert isinstance(lim, _HeldSettle)
        lim.gate = asyncio.Event()
        await lim.apply_policy(Policy.from_toml(policy))  # room for 2 holds of 100 tokens
        await lim.reserve("c", "gpt-4o-mini", est_tokens=100, max_output_tokens=0)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        other = await lim.try_reserve("c", "gpt-4o-mini", est_tokens=100, max_output_tokens=0)
        lim.gate.set()
        await lim.aclose()
        assert not other.allowed  # the cancelled settle's hold still counted

    asyncio.run(main())
    state = _budget(rclient)
    assert state["spent"] + state["held"] <= 30_000


def _budget(rclient: Any) -> dict[str, int]:
    raw = rclient.hget("prism:{c}:budgets", "cap").decode()
    spent, held = raw.split(":")[:2]
    return {"spent": int(spent), "held": int(held)}


class _Dropped(AsyncLimiter):
    """Cancels the calling request as its ``_CANCEL_AT`` script is about to go out, and does
    not send it (the call's own retry, in the background, goes out)."""

    async def _io(self, request: Request) -> Any:
        target = _CANCEL_AT.get()
        script = isinstance(request, Script) and target and request.name == target[0]
        if script and target and not target[1].done():  # the retry, later, goes out
            target[1].cancel()
            await asyncio.sleep(0)  # the cancellation lands here: nothing was sent
        return await super()._io(request)


@pytest.mark.parametrize("by", ["reservation", "id"])
def test_a_release_cancelled_before_it_is_sent_still_lands(
    redis_url: str, rclient: Any, by: str
) -> None:
    """``await r.release()`` (outside a block: ``try/finally``, say) or
    ``await limiter.release(project, id)`` whose caller is cancelled before the script goes
    out is finished in the background, like a settle: the hold does not wait for its lease."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        r = await lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="let-go")
        _CANCEL_AT.set(("release", task))
        if by == "id":
            await lim.release("p", r.id)
        else:
            await r.release()

    async def main() -> None:
        lim = _Dropped.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert _state(rclient, "let-go") == b"R"
    assert held_nano(rclient, "p", "b") == 0
    assert rate_state(rclient, "p", "r:slots")["holds"] == 0


def test_a_settle_by_id_cancelled_before_it_is_sent_still_lands(
    redis_url: str, rclient: Any
) -> None:
    """``await limiter.settle(project, id, ...)`` whose caller is cancelled before the script
    goes out is finished in the background (settling is idempotent by id): the usage is
    booked, the hold and its slot freed."""

    async def request(lim: AsyncLimiter) -> None:
        task = asyncio.current_task()
        assert task is not None
        r = await lim.reserve("p", "gpt-4o-mini", est_tokens=100, reservation_id="by-id")
        _CANCEL_AT.set(("settle", task))
        await lim.settle("p", r.id, input_tokens=90, output_tokens=10)

    async def main() -> None:
        lim = _Dropped.from_url(redis_url)
        await lim.apply_policy(Policy.from_toml(POLICY))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(request(lim))
        await lim.aclose()

    asyncio.run(main())
    assert _state(rclient, "by-id") == b"S"
    assert held_nano(rclient, "p", "b") == 0
    assert spent_nano(rclient, "p", "b") > 0
    assert rate_state(rclient, "p", "r:slots")["holds"] == 0
