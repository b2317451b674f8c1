"""Fixtures: a real redis-server of our own (never 6379), and limiters over it.

``PRISM_TEST_REDIS_URL`` points the suite at a given server instead (it is flushed!). Without
``redis-server`` on PATH the integration tests are skipped locally and fail under ``CI=true``.
``--soak[=SECONDS]`` (or ``PRISM_SOAK=SECONDS``) runs the load tests long and wide instead of
at their CI size.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))

from _facades import AsyncAsSync

from prism_limiter import AsyncLimiter, Limiter, Policy
from prism_limiter.engine._devserver import given_url, redis_server, redis_server_binary

SOAK_DEFAULT_S = 600.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        nargs="?",
        type=float,
        const=SOAK_DEFAULT_S,
        default=None,
        metavar="SECONDS",
        help="run the load tests (the history checker) for SECONDS, 600 when not given, with"
        " more workers; the environment variable PRISM_SOAK=SECONDS does the same",
    )


@pytest.fixture(scope="session")
def soak_s(request: pytest.FixtureRequest) -> float | None:
    """How long the load tests run in soak mode, or None for their CI size."""
    given = request.config.getoption("--soak")
    if given is None and os.environ.get("PRISM_SOAK"):
        given = float(os.environ["PRISM_SOAK"])
    return None if given is None else float(given)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = given_url()
    if url:
        yield url
        return
    if redis_server_binary() is None:
        message = "redis-server (>= 6.2) is not on PATH: apt-get install redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with redis_server() as started:
        yield started


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    """A raw client on a flushed server; scripts flushed too, so the reload path runs."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    client.flushall()
    client.script_flush()
    yield client
    client.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_limiter(rclient: redis.Redis, redis_url: str, flavour: str) -> Iterator[object]:
    """Build limiters of the parametrized flavour; the async one is driven through a facade
    with the sync method names, so one behavioural test covers both faces."""
    runner = asyncio.Runner()
    made: list[object] = []

    def make(**kwargs: object) -> Limiter | AsyncAsSync:
        if flavour == "sync":
            lim = Limiter.from_url(redis_url, **kwargs)  # type: ignore[arg-type]
            made.append(lim)
            return lim
        alim = runner.run(_make_async(redis_url, kwargs))
        facade = AsyncAsSync(alim, runner)
        made.append(facade)
        return facade

    yield make
    for lim in made:
        lim.close()  # type: ignore[attr-defined]
    runner.close()


async def _make_async(url: str, kwargs: dict[str, object]) -> AsyncLimiter:
    return AsyncLimiter.from_url(url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def limiter(make_limiter: object) -> object:
    return make_limiter()  # type: ignore[operator]


POLICY = """
[projects.search]
allow_models = ["gpt-4o-mini", "gpt-4o", "claude-haiku-*", "free-model"]
deny_models  = ["*opus*"]
default_max_output_tokens = 400
on_unknown_price = "deny"

[projects.search.prices."free-model"]
input_mtok = 0.0
output_mtok = 0.0

[[projects.search.budgets]]
id = "monthly"
usd = 1.0
period = "month"
warn_at = [0.5, 0.8]

[[projects.search.budgets]]
id = "per-customer"
usd = 0.01
period = "day"
split_by = "customer"
where = { feature = "chat" }
"""


@pytest.fixture
def policy() -> Policy:
    return Policy.from_toml(POLICY)
