"""A worker thread that reserves and settles in a loop and records every outcome."""

from __future__ import annotations

import threading
import time
from typing import Any

from prism_limiter import BackendUnavailable

USAGE: dict[str, Any] = {"input_tokens": 900, "output_tokens": 90}


class Load:
    """``reserve`` + ``settle`` of ``project`` in a loop, each id ``<prefix>-<n>``.

    ``acknowledged`` lists the ids whose settle returned; ``failures`` counts the calls that
    raised ``BackendUnavailable`` (the documented outcome while Redis cannot answer);
    ``unexpected`` keeps anything else, which a test should find empty.
    """

    def __init__(self, limiter: Any, project: str, prefix: str, model: str = "gpt-4o") -> None:
        self.limiter, self.project, self.prefix, self.model = limiter, project, prefix, model
        self.acknowledged: list[str] = []
        self.failures = 0
        self.unexpected: list[str] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, deadline_s: float = 60) -> None:
        """Stop after the call in flight; that call must end within the deadline (no hang)."""
        self._stop.set()
        self._thread.join(deadline_s)
        assert not self._thread.is_alive(), f"a call of {self.prefix} hung"

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            rid = f"{self.prefix}-{i}"
            i += 1
            try:
                r = self.limiter.reserve(
                    self.project, self.model, est_tokens=1000, reservation_id=rid
                )
                r.settle(**USAGE)
            except BackendUnavailable:
                with self._changed:
                    self.failures += 1
                    self._changed.notify_all()
                time.sleep(0.005)  # do not spin while Redis cannot answer
                continue
            except Exception as exc:  # anything else is a finding: keep it
                self.unexpected.append(repr(exc))
                continue
            with self._changed:
                self.acknowledged.append(rid)
                self._changed.notify_all()

    def wait(self, *, acknowledged: int = 0, failures: int = 0, deadline_s: float = 90) -> bool:
        """Until at least ``acknowledged`` settles and ``failures`` failures were counted."""
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self.acknowledged) >= acknowledged and self.failures >= failures,
                deadline_s,
            )
