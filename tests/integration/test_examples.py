"""The framework examples, run for real: 200 / 403 / 429 with the decision headers, settle after
the call, release on an exception, the policy they ship, and the ``memory://`` default."""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import held_nano, spent_nano

from prism_limiter import AsyncLimiter, Limiter, Policy
from prism_limiter.engine._devserver import free_port

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# The examples build their module-level app at import: never on a Redis from the environment.
with pytest.MonkeyPatch.context() as _env:
    _env.delenv("PRISM_REDIS_URL", raising=False)
    from examples import asyncio_workers, fastapi_app, flask_app

POLICY = Policy.from_toml(
    """
[projects.search]
allow_models = ["gpt-4o-mini"]
deny_models = ["*opus*"]
[[projects.search.budgets]]
id = "daily"
usd = 0.0005
period = "day"
warn_at = [0.5]
[[projects.search.rate_limits]]
id = "slow-lane"
rpm = 2
where = { lane = "slow" }
"""
)
PROMPT = {"prompt": "x" * 400}  # ~100 tokens: a hold of about $0.00017
SLOW = {"X-Prism-Tags": "lane=slow"}


class Boom(Exception):
    pass


def _fake_async_llm(fail: bool = False) -> Any:
    async def llm(model: str, prompt: str) -> tuple[str, dict[str, int]]:
        if fail:
            raise Boom
        return "ok", {"prompt_tokens": 100, "completion_tokens": 20}

    return llm


def _fake_llm(model: str, prompt: str) -> tuple[str, dict[str, int]]:
    return "ok", {"prompt_tokens": 100, "completion_tokens": 20}


def _fresh_memory() -> str:
    """An embedded store of its own (every ``memory://`` of a process is one store)."""
    return f"memory://{uuid.uuid4().hex}"


def _is_embedded(limiter: Limiter | AsyncLimiter) -> bool:
    return type(limiter.client).__module__.startswith("fakeredis")


@pytest.fixture
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PRISM_REDIS_URL", raising=False)
    yield
    monkeypatch.delenv("PRISM_REDIS_URL", raising=False)
    for module in (fastapi_app, flask_app):  # leave the module-level apps embedded
        importlib.reload(module)


# -- the shipped policy -----------------------------------------------------------------------


def test_shipped_policy_is_the_examples_policy() -> None:
    """examples/policy.toml holds each example's project, and each example applies exactly its
    own project from it (so applying it leaves other projects alone)."""
    shipped = Policy.load(ROOT / "examples" / "policy.toml")
    assert set(shipped.projects) == {"search", "batch"}
    for module in (fastapi_app, flask_app):
        assert module.own_policy() == Policy(projects={"search": shipped.projects["search"]})
    assert asyncio_workers.own_policy() == Policy(projects={"batch": shipped.projects["batch"]})
    monthly = next(b for b in shipped.projects["search"].budgets if b.id == "monthly")
    assert monthly.warn_at == (0.8,)  # the README: warn_at defaults to [0.8]


def test_shipped_policy_allows_what_the_examples_send() -> None:
    """The examples' default model is allowed; the documented denials are what they say."""
    with Limiter.from_url(_fresh_memory()) as lim:
        lim.apply_policy(Policy.load(ROOT / "examples" / "policy.toml"))
        for project in ("search", "batch"):
            r = lim.try_reserve(project, "gpt-4o-mini", est_tokens=1500, max_output_tokens=300)
            assert r.allowed, r.decision
            r.release()
        assert lim.try_reserve("search", "gpt-4o", est_tokens=10).decision.reason == (
            "model-not-allowed"
        )
        assert lim.try_reserve("search", "claude-3-opus", est_tokens=10).decision.reason == (
            "model-denied"
        )
        haiku = lim.try_reserve("search", "claude-haiku-4-5", est_tokens=10)
        assert haiku.allowed, haiku.decision
        haiku.release()


# -- FastAPI -----------------------------------------------------------------------------------


def test_fastapi_precheck(redis_url: str, rclient: Any) -> None:
    """200 with budget headers and settle; 403 for a model the policy refuses; 429 with
    Retry-After for a rate limit and once the budget is spent; 400 for a bad tag header."""
    from fastapi.testclient import TestClient

    limiter = AsyncLimiter.from_url(redis_url)
    with TestClient(fastapi_app.create_app(limiter, _fake_async_llm(), POLICY)) as client:
        ok = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=search"})
        assert ok.status_code == 200
        assert ok.json()["cost_usd"] == pytest.approx((100 * 0.15 + 20 * 0.6) / 1e6)
        assert "X-Prism-Budget-Remaining-USD" in ok.headers
        assert ok.headers["X-Prism-Reservation"]

        for model, reason in (("gpt-4o", "model-not-allowed"), ("claude-3-opus", "model-denied")):
            refused = client.post("/complete", json={**PROMPT, "model": model})
            assert refused.status_code == 403
            assert refused.headers["X-Prism-Reason"] == reason
            assert refused.headers["X-Prism-Reservation"]
            assert "Retry-After" not in refused.headers

        bad = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=a, team=b"})
        assert bad.status_code == 400 and "duplicate" in bad.text

        slow = [client.post("/complete", json=PROMPT, headers=SLOW) for _ in range(3)]
        assert [r.status_code for r in slow] == [200, 200, 429]
        assert slow[-1].headers["X-Prism-Reason"] == "rate"
        assert slow[-1].headers["X-Prism-Limit"] == "slow-lane"
        assert int(slow[-1].headers["Retry-After"]) >= 1

        statuses = [client.post("/complete", json=PROMPT).status_code for _ in range(30)]
        assert 429 in statuses
        denied = client.post("/complete", json=PROMPT)
        assert denied.status_code == 429
        assert int(denied.headers["Retry-After"]) >= 1
        assert denied.headers["X-Prism-Budget"] == "daily"
        assert denied.headers["X-Prism-Reason"] == "budget"
        assert denied.headers["X-Prism-Reservation"]
    assert held_nano(rclient, "search", "daily") == 0
    assert spent_nano(rclient, "search", "daily") <= 500_000


def test_fastapi_releases_when_the_handler_raises(redis_url: str, rclient: Any) -> None:
    from fastapi.testclient import TestClient

    limiter = AsyncLimiter.from_url(redis_url)
    failing = fastapi_app.create_app(limiter, _fake_async_llm(fail=True), POLICY)
    with TestClient(failing, raise_server_exceptions=False) as client:
        assert client.post("/complete", json=PROMPT).status_code == 500
    assert held_nano(rclient, "search", "daily") == 0
    assert spent_nano(rclient, "search", "daily") == 0


def test_fastapi_no_policy_is_403_and_no_redis_is_503() -> None:
    from fastapi.testclient import TestClient

    bare = fastapi_app.create_app(AsyncLimiter.from_url(_fresh_memory()), _fake_async_llm())
    with TestClient(bare) as client:
        refused = client.post("/complete", json=PROMPT)
        assert refused.status_code == 403
        assert refused.headers["X-Prism-Reason"] == "no-policy"

    down = AsyncLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0", retries=0)
    with TestClient(fastapi_app.create_app(down, _fake_async_llm())) as client:
        assert client.post("/complete", json=PROMPT).status_code == 503


@pytest.mark.usefixtures("no_env_url")
def test_fastapi_module_app_is_embedded_with_its_policy() -> None:
    """Without PRISM_REDIS_URL the served app runs on memory://, with the search project of
    examples/policy.toml applied on startup: allowed models answer 200, not 403 no-policy."""
    from fastapi.testclient import TestClient

    module = importlib.reload(fastapi_app)
    assert _is_embedded(module.app.state.limiter)
    with TestClient(module.app) as client:
        ok = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=search"})
        assert ok.status_code == 200, ok.text
        refused = client.post("/complete", json={**PROMPT, "model": "gpt-4o"})
        assert refused.status_code == 403
        assert refused.headers["X-Prism-Reason"] == "model-not-allowed"


@pytest.mark.usefixtures("no_env_url")
def test_fastapi_module_app_follows_prism_redis_url(
    redis_url: str, rclient: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PRISM_REDIS_URL the app stores its own project's policy there, and no other."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PRISM_REDIS_URL", redis_url)
    module = importlib.reload(fastapi_app)
    assert not _is_embedded(module.app.state.limiter)
    assert not rclient.exists("prism:{search}:policy")  # applied on startup, not at import
    with TestClient(module.app) as client:
        assert client.post("/complete", json=PROMPT).status_code == 200
    assert rclient.exists("prism:{search}:policy")
    assert not rclient.exists("prism:{batch}:policy")
    assert spent_nano(rclient, "search", "monthly") > 0


# -- Flask -------------------------------------------------------------------------------------


def test_flask_precheck(redis_url: str, rclient: Any) -> None:
    """The WSGI example: 200 and settle, 403 for a refused model, 429 with headers for a rate
    limit and once the budget is spent, 400 for a bad tag header."""
    with Limiter.from_url(redis_url) as lim:
        client = flask_app.create_app(lim, _fake_llm, POLICY).test_client()
        first = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=search"})
        assert first.status_code == 200 and first.json is not None
        assert first.headers["X-Prism-Reservation"]

        for model, reason in (("gpt-4o", "model-not-allowed"), ("claude-3-opus", "model-denied")):
            refused = client.post("/complete", json={**PROMPT, "model": model})
            assert refused.status_code == 403
            assert refused.headers["X-Prism-Reason"] == reason
            assert refused.headers["X-Prism-Reservation"]

        bad = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=a, team=b"})
        assert bad.status_code == 400

        slow = [client.post("/complete", json=PROMPT, headers=SLOW) for _ in range(3)]
        assert [r.status_code for r in slow] == [200, 200, 429]
        assert slow[-1].headers["X-Prism-Reason"] == "rate"
        assert int(slow[-1].headers["Retry-After"]) >= 1

        responses = [client.post("/complete", json=PROMPT) for _ in range(30)]
        denied = [r for r in responses if r.status_code == 429]
        assert denied and denied[-1].headers["X-Prism-Reason"] == "budget"
        assert "Retry-After" in denied[-1].headers
        assert denied[-1].headers["X-Prism-Reservation"]
        assert held_nano(rclient, "search", "daily") == 0
        assert spent_nano(rclient, "search", "daily") <= 500_000


def test_flask_releases_when_the_llm_call_raises(redis_url: str, rclient: Any) -> None:
    def failing(model: str, prompt: str) -> tuple[str, Any]:
        raise Boom

    with Limiter.from_url(redis_url) as lim:
        app = flask_app.create_app(lim, failing, POLICY)
        assert app.test_client().post("/complete", json=PROMPT).status_code == 500
    assert held_nano(rclient, "search", "daily") == 0
    assert spent_nano(rclient, "search", "daily") == 0


def test_flask_no_policy_is_403_and_no_redis_is_503() -> None:
    with Limiter.from_url(_fresh_memory()) as lim:
        refused = flask_app.create_app(lim, _fake_llm).test_client().post("/complete", json=PROMPT)
        assert refused.status_code == 403
        assert refused.headers["X-Prism-Reason"] == "no-policy"
    with Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", retries=0) as down:
        client = flask_app.create_app(down, _fake_llm).test_client()
        assert client.post("/complete", json=PROMPT).status_code == 503


@pytest.mark.usefixtures("no_env_url")
def test_flask_module_app_is_embedded_with_its_policy() -> None:
    module = importlib.reload(flask_app)
    assert _is_embedded(module.app.extensions["prism_limiter"])
    client = module.app.test_client()
    ok = client.post("/complete", json=PROMPT, headers={"X-Prism-Tags": "team=search"})
    assert ok.status_code == 200, ok.text
    refused = client.post("/complete", json={**PROMPT, "model": "claude-3-opus"})
    assert refused.status_code == 403
    assert refused.headers["X-Prism-Reason"] == "model-denied"


@pytest.mark.usefixtures("no_env_url")
def test_flask_module_app_follows_prism_redis_url(
    redis_url: str, rclient: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRISM_REDIS_URL", redis_url)
    module = importlib.reload(flask_app)
    assert not _is_embedded(module.app.extensions["prism_limiter"])
    assert rclient.exists("prism:{search}:policy")  # applied before it serves
    assert not rclient.exists("prism:{batch}:policy")
    assert module.app.test_client().post("/complete", json=PROMPT).status_code == 200
    assert spent_nano(rclient, "search", "monthly") > 0


# -- asyncio workers ---------------------------------------------------------------------------


def test_asyncio_worker_pool(redis_url: str, rclient: Any) -> None:
    """16 workers share one budget and stop when it blocks them; no hold is left behind; the
    pool applied only its own project's policy."""
    done, usd = asyncio.run(asyncio_workers.run(redis_url))
    assert 0 < done < 500
    spent = spent_nano(rclient, "batch", "nightly")
    assert spent == pytest.approx(usd * 1e9, abs=done) and spent <= 20_000_000
    assert held_nano(rclient, "batch", "nightly") == 0
    assert not rclient.exists("prism:{search}:policy")


@pytest.mark.usefixtures("no_env_url")
def test_asyncio_workers_main_is_embedded(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PRISM_REDIS_URL the pool runs on memory:// under its policy until it blocks."""
    urls: list[str] = []
    real = asyncio_workers.run

    async def spy(url: str) -> tuple[int, float]:
        urls.append(url)
        return await real(url)

    monkeypatch.setattr(asyncio_workers, "run", spy)
    asyncio_workers.main()
    assert urls == ["memory://"]
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith("before the nightly budget of $0.02 blocked the pool")
    assert int(last.split()[0]) > 0
