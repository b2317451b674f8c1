"""The framework examples, run for real against redis-server: 429s, headers, settle after."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from _helpers import held_nano, spent_nano

from prism_limiter import AsyncLimiter, Limiter, Policy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples import asyncio_workers, fastapi_app, flask_app

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    """
[projects.search]
allow_models = ["gpt-4o-mini"]
[[projects.search.budgets]]
id = "daily"
usd = 0.0005
period = "day"
warn_at = [0.5]
"""
)
PROMPT = {"prompt": "x" * 400}  # ~100 tokens: a hold of about $0.00017


class Boom(Exception):
    pass


def _fake_async_llm(fail: bool = False) -> Any:
    async def llm(prompt: str) -> tuple[str, dict[str, int]]:
        if fail:
            raise Boom
        return "ok", {"prompt_tokens": 100, "completion_tokens": 20}

    return llm


def _apply(url: str) -> None:
    with Limiter.from_url(url) as lim:
        lim.apply_policy(POLICY)


def test_fastapi_precheck(redis_url: str, rclient: Any) -> None:
    """200 with budget headers and settle; 429 with Retry-After once the budget is spent;
    400 for a bad tag header; an exception in the handler releases the hold."""
    from fastapi.testclient import TestClient

    _apply(redis_url)
    limiter = AsyncLimiter.from_url(redis_url)
    with TestClient(fastapi_app.create_app(limiter, _fake_async_llm())) as client:
        ok = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=search"})
        assert ok.status_code == 200
        assert ok.json()["cost_usd"] == pytest.approx((100 * 0.15 + 20 * 0.6) / 1e6)
        assert "X-Prism-Budget-Remaining-USD" in ok.headers
        bad = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=a, team=b"})
        assert bad.status_code == 400 and "duplicate" in bad.text
        statuses = [client.post("/complete", json=PROMPT).status_code for _ in range(30)]
        assert 429 in statuses
        denied = client.post("/complete", json=PROMPT)
        assert denied.status_code == 429
        assert int(denied.headers["Retry-After"]) >= 1
        assert denied.headers["X-Prism-Budget"] == "daily"
        assert denied.headers["X-Prism-Reason"] == "budget"
        client.portal.call(limiter.aclose)  # type: ignore[union-attr]
    assert held_nano(rclient, "search", "daily") == 0
    assert spent_nano(rclient, "search", "daily") <= 500_000

    rclient.flushall()
    _apply(redis_url)
    limiter = AsyncLimiter.from_url(redis_url)
    failing = fastapi_app.create_app(limiter, _fake_async_llm(fail=True))
    with TestClient(failing, raise_server_exceptions=False) as client:
        assert client.post("/complete", json=PROMPT).status_code == 500
        client.portal.call(limiter.aclose)  # type: ignore[union-attr]
    assert held_nano(rclient, "search", "daily") == 0
    assert spent_nano(rclient, "search", "daily") == 0


def test_flask_precheck(redis_url: str, rclient: Any) -> None:
    """The WSGI example: settles on success, answers 429 with headers when the budget is spent."""
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(POLICY)
    app = flask_app.create_app(
        lim, lambda p: ("ok", {"prompt_tokens": 100, "completion_tokens": 20})
    )
    client = app.test_client()
    first = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=search"})
    assert first.status_code == 200 and first.json is not None
    responses = [client.post("/complete", json=PROMPT) for _ in range(30)]
    denied = [r for r in responses if r.status_code == 429]
    assert denied and denied[-1].headers["X-Prism-Reason"] == "budget"
    assert "Retry-After" in denied[-1].headers
    assert held_nano(rclient, "search", "daily") == 0
    assert spent_nano(rclient, "search", "daily") <= 500_000
    lim.close()


def test_asyncio_worker_pool(redis_url: str, rclient: Any) -> None:
    """16 workers share one budget and stop when it blocks them; no hold is left behind."""
    done, usd = asyncio.run(asyncio_workers.run(redis_url))
    assert 0 < done < 500
    spent = spent_nano(rclient, "batch", "nightly")
    assert spent == pytest.approx(usd * 1e9, abs=done) and spent <= 20_000_000
    assert held_nano(rclient, "batch", "nightly") == 0
