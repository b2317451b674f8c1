"""Network faults between the limiter and Redis: retries never double-apply, no call hangs.

A proxy (``_proxy.FaultProxy``) sits between the client and a real redis-server: it delays
replies past the timeout, drops a reply after the command reached Redis, resets mid-reply, or
swallows everything.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from _helpers import held_nano, spent_nano
from _proxy import FaultProxy

from prism_limiter import BackendUnavailable, Limiter, ModelNotAllowed, Policy

POLICY = """
[projects.p]
allow_models = ["gpt-4o*"]
[[projects.p.budgets]]
id = "b"
usd = 10.0
"""
FAULTS = ("delay", "drop_reply", "reset", "blackhole")
HANG_BOUND_S = 10  # far above the 0.3 s timeouts below: only a hang gets near it


@pytest.fixture
def proxy(redis_url: str, rclient: Any) -> Iterator[FaultProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    with FaultProxy(port) as p:
        yield p


def _limiter(proxy: FaultProxy, **kwargs: Any) -> Limiter:
    """A limiter through the proxy, warmed up: policy applied and cached, checks done."""
    lim = Limiter.from_url(proxy.url, socket_timeout=0.3, **kwargs)
    lim.apply_policy(Policy.from_toml(POLICY))
    lim.reserve("p", "gpt-4o", est_tokens=1).release()
    return lim


def test_lost_reserve_reply_is_retried_without_a_second_hold(
    proxy: FaultProxy, rclient: Any
) -> None:
    """The reply of a reserve that ran is lost; the client's retry replays it: one hold."""
    lim = _limiter(proxy, retries=2)
    proxy.mode, proxy.once = "drop_reply", True
    r = lim.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=100)
    assert proxy.faults == 1 and r.decision.replayed
    assert held_nano(rclient, "p", "b") == round(r.decision.hold_usd * 1e9)
    r.release()
    assert held_nano(rclient, "p", "b") == 0


def test_lost_settle_reply_books_once(proxy: FaultProxy, rclient: Any) -> None:
    """The reply of a settle that ran is lost; the retry returns the first result."""
    lim = _limiter(proxy, retries=2)
    r = lim.reserve("p", "gpt-4o", est_tokens=1000, max_output_tokens=100)
    proxy.mode, proxy.once = "drop_reply", True
    s = r.settle(input_tokens=500, output_tokens=50)
    assert proxy.faults == 1 and not s.first  # the retry saw the settle already booked
    assert spent_nano(rclient, "p", "b") == round(s.cost_usd * 1e9)
    assert held_nano(rclient, "p", "b") == 0


@pytest.mark.parametrize("fault", FAULTS)
def test_closed_mode_fails_within_the_timeout(proxy: FaultProxy, rclient: Any, fault: str) -> None:
    """Every fault gives BackendUnavailable, promptly; a retry with the same id then settles
    the unknown outcome: one hold at most, never two."""
    lim = _limiter(proxy, retries=0)
    proxy.mode = fault
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        lim.reserve("p", "gpt-4o", est_tokens=1000, reservation_id="job-1")
    assert time.monotonic() - start < HANG_BOUND_S
    proxy.mode = "pass"
    r = lim.reserve("p", "gpt-4o", est_tokens=1000, reservation_id="job-1")
    assert r.decision.replayed is (fault != "blackhole")  # the others reached Redis
    assert held_nano(rclient, "p", "b") == round(r.decision.hold_usd * 1e9)


@pytest.mark.parametrize("fault", FAULTS)
def test_open_mode_allows_keeps_the_model_policy_and_logs(
    proxy: FaultProxy, rclient: Any, fault: str
) -> None:
    """Open mode answers through every fault: allowed unchecked, cached model lists enforced."""
    lim = _limiter(proxy, retries=0, failure_mode="open")
    proxy.mode = fault
    start = time.monotonic()
    allowed = lim.reserve("p", "gpt-4o", est_tokens=10)
    with pytest.raises(ModelNotAllowed):
        lim.reserve("p", "claude-haiku-4-5", est_tokens=10)
    assert time.monotonic() - start < 2 * HANG_BOUND_S
    assert allowed.decision.degraded
