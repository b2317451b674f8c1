"""Ready-made redis-py clients: any decoding setting works; a client without timeouts is flagged."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from prism_limiter import Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")

POLICY = Policy.from_toml(
    "[projects.p]\nallow_models=['*']\n[[projects.p.budgets]]\nid='b'\nusd=1\nsplit_by='c'\n"
)


@pytest.mark.parametrize("decode", [True, False])
def test_user_client_with_any_decoding(redis_url: str, decode: bool) -> None:
    """Limiter(client) works with decode_responses on or off."""
    client = redis.Redis.from_url(redis_url, decode_responses=decode, socket_timeout=2)
    lim = Limiter(client)
    lim.apply_policy(POLICY)
    with lim.reserve("p", "gpt-4o", est_tokens=10, tags={"c": "org:1"}) as r:
        r.settle(input_tokens=10, output_tokens=1)
    [s] = lim.status("p")
    assert s.split_value == "org:1" and s.spent_usd > 0
    assert lim.usage("p").by_tag["c"]["org:1"].requests == 1
    assert lim.settle("p", r.id, input_tokens=1, output_tokens=1).first is False
    lim.close()


def test_client_without_timeout_is_flagged(redis_url: str) -> None:
    client: Any = redis.Redis.from_url(redis_url)  # redis-py's default: no socket timeout
    with capture_logs() as logs:
        Limiter(client).close()
    assert [e["event"] for e in logs] == ["prism.client.no_timeout"]
