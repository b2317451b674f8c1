"""A circuit breaker in front of Redis: after repeated failures, fail fast for a cool-down.

Without it every call pays the full socket timeout (and its retries) while Redis is down. After
``failures`` consecutive backend failures the circuit opens: calls fail at once with
``BackendUnavailable`` (so the failure mode applies) until ``cooldown_s`` has passed; then calls
go through again as probes, and the first success closes the circuit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prism_limiter.errors import BackendUnavailable


class Breaker:
    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0

    def check(self) -> None:
        """Raise ``BackendUnavailable`` while the circuit is open."""
        if self._consecutive < self.failures:
            return
        left = self._open_until - self._clock()
        if left > 0:
            raise BackendUnavailable(
                f"Redis failed {self._consecutive} times in a row; not trying again for"
                f" {left:.1f}s (circuit open)"
            )

    def failed(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open_until = self._clock() + self.cooldown_s

    def succeeded(self) -> None:
        if self._consecutive:
            with self._lock:
                self._consecutive = 0
