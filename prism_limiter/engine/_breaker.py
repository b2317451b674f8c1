"""A circuit breaker in front of Redis: after repeated failures, fail fast for a cool-down.

Without it every call pays the full socket timeout (and its retries) while Redis is down. After
``failures`` consecutive backend failures the circuit opens: calls fail at once with
``BackendUnavailable`` (so the failure mode applies) until ``cooldown_s`` has passed; then calls
go through again as probes, and the first success closes the circuit.

The count is kept per *scope*: a single server is one scope; on a Redis Cluster each hash slot
is one (``LimiterCore.scope``), so a shard that fails opens the circuit of its own projects
only, and the projects of the healthy shards carry on.
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
        self._consecutive: dict[int, int] = {}  # scope -> failures in a row (absent: none)
        self._open_until: dict[int, float] = {}

    def check(self, scope: int = 0) -> None:
        """Raise ``BackendUnavailable`` while the circuit of ``scope`` is open."""
        failures = self._consecutive.get(scope, 0)
        if failures < self.failures:
            return
        left = self._open_until.get(scope, 0.0) - self._clock()
        if left > 0:
            raise BackendUnavailable(
                f"Redis failed {failures} times in a row; not trying again for"
                f" {left:.1f}s (circuit open)"
            )

    def failed(self, scope: int = 0) -> None:
        with self._lock:
            failures = self._consecutive[scope] = self._consecutive.get(scope, 0) + 1
            if failures >= self.failures:
                self._open_until[scope] = self._clock() + self.cooldown_s

    def succeeded(self, scope: int = 0) -> None:
        if self._consecutive.get(scope):
            with self._lock:
                self._consecutive.pop(scope, None)
                self._open_until.pop(scope, None)
