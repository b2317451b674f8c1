"""The demo runs to its end: worker processes share one budget until it blocks them."""

from __future__ import annotations

from typing import Any

import pytest

from prism_limiter import _demo


@pytest.mark.slow
def test_demo_against_redis(
    redis_url: str, rclient: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _demo.run(redis_url, workers=2) == 0
    out = capsys.readouterr().out
    assert "every budget stayed within its cap" in out
    assert "XREAD BLOCK 0 STREAMS 'prism:{search}:audit'" in out


def test_demo_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    assert _demo.run("memory://demo-test", workers=2) == 0
    assert "blocked by" in capsys.readouterr().out
