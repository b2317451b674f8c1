"""Drive an ``AsyncLimiter`` through the sync method names, so tests are written once."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from prism_limiter import AsyncLimiter, AsyncReservation


class AsyncReservationAsSync:
    def __init__(self, reservation: AsyncReservation, runner: asyncio.Runner) -> None:
        self._r = reservation
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)

    def settle(self, usage: Any = None, **counts: Any) -> Any:
        return self._runner.run(self._r.settle(usage, **counts))

    def release(self) -> bool:
        return self._runner.run(self._r.release())

    def __enter__(self) -> AsyncReservationAsSync:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._runner.run(self._r.__aexit__(et, e, tb))


class AsyncAsSync:
    def __init__(self, limiter: AsyncLimiter, runner: asyncio.Runner) -> None:
        self.inner = limiter
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result):  # coroutines, and the call reserve() returns
                result = self._runner.run(result)
            if isinstance(result, AsyncReservation):
                return AsyncReservationAsSync(result, self._runner)
            return result

        return call

    def close(self) -> None:
        self._runner.run(self.inner.aclose())
