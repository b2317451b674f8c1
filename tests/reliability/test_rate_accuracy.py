"""Rate accuracy: over seconds of contention, admitted volume stays within rate x time + burst.

Tolerance: admitted <= burst + rate x elapsed + 2 (two requests of slack for the client's
measurement window versus the server clock), and admitted >= 90% of that bound (the limiter
does not deny what it should admit).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from prism_limiter import Limiter, Policy, RateLimited

THREADS, SECONDS = 8, 4.0


def _hammer(url: str, tokens: int) -> tuple[int, int, float]:
    lim = Limiter.from_url(url)
    admitted = denied = 0
    lock = threading.Lock()
    start = time.monotonic()

    def run() -> None:
        nonlocal admitted, denied
        while time.monotonic() - start < SECONDS:
            try:
                lim.reserve("p", "gpt-4o", est_tokens=tokens).settle(
                    input_tokens=tokens, output_tokens=0
                )
                with lock:
                    admitted += 1
            except RateLimited:
                with lock:
                    denied += 1

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted, denied, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limit", "per_request", "rate_per_s", "burst"),
    [("rpm=3000", 1, 50.0, 150.0), ("tpm=600000", 100, 10000.0, 30000.0)],
)
def test_admitted_volume_within_rate_plus_burst(
    redis_url: str,
    rclient: Any,
    limit: str,
    per_request: int,
    rate_per_s: float,
    burst: float,
) -> None:
    """Many threads against one bucket: admitted volume is bounded by burst + rate x time."""
    Limiter.from_url(redis_url).apply_policy(
        Policy.from_toml(
            "[projects.p]\nallow_models=['*']\ndefault_max_output_tokens=0\n"
            f"[[projects.p.rate_limits]]\nid='r'\n{limit}\nburst=0.05\n"
        )
    )
    admitted, denied, elapsed = _hammer(redis_url, per_request)
    volume = admitted * per_request
    bound = burst + rate_per_s * elapsed
    print(
        f"{limit}: admitted {volume} of bound {bound:.0f} ({volume / bound:.3f}), denied {denied}"
    )
    assert denied > 0
    assert volume <= bound + 2 * per_request
    assert volume >= 0.9 * bound
