"""The public surface: a sorted, complete ``__all__`` and the documented error tree."""

from __future__ import annotations

from types import ModuleType

import prism_limiter
from prism_limiter import errors


def _isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions (the order ruff's RUF022 keeps)."""
    group = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return group, name


def test_all_is_sorted_and_complete() -> None:
    """Every public name is in ``__all__``; submodules (``errors``, and ``cli`` or ``metrics``
    once something imported them) are modules, not names of the API."""
    public = {
        n
        for n, v in vars(prism_limiter).items()
        if not n.startswith("_") and not isinstance(v, ModuleType)
    }
    assert prism_limiter.__all__ == sorted(prism_limiter.__all__, key=_isort_style)
    assert set(prism_limiter.__all__) == public


def test_error_tree() -> None:
    assert issubclass(errors.BudgetExceeded, errors.LimitExceeded)
    assert issubclass(errors.RateLimited, errors.LimitExceeded)
    assert issubclass(errors.ModelNotAllowed, errors.LimitExceeded)
    assert issubclass(errors.InvalidRequest, ValueError)
    assert issubclass(errors.PolicyError, ValueError)
    assert issubclass(errors.NotReplicated, errors.BackendUnavailable)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.PrismLimiterError)


def test_sync_and_async_faces_have_the_same_methods() -> None:
    """Every public method of Limiter exists on AsyncLimiter (close is aclose there), awaited:
    a coroutine function, or (reserve, try_reserve) one returning an awaitable context manager."""
    import inspect
    import typing
    from collections.abc import AsyncIterator, Awaitable
    from contextlib import AbstractAsyncContextManager

    from prism_limiter import AsyncLimiter, AsyncReservation, Limiter, Reservation

    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(Limiter) - {"close"} == public(AsyncLimiter) - {"aclose"}
    assert public(Reservation) == public(AsyncReservation)
    for name in public(Limiter) - {"close", "from_url", "client", "namespace", "audit_key"}:
        sync_sig = inspect.signature(getattr(Limiter, name))
        async_sig = inspect.signature(getattr(AsyncLimiter, name))
        assert sync_sig.parameters.keys() == async_sig.parameters.keys(), name
        method = getattr(AsyncLimiter, name)
        if name == "read_audit":
            returned = typing.get_type_hints(method)["return"]
            assert typing.get_origin(returned) is AsyncIterator, name
        elif name in ("reserve", "try_reserve"):
            returned = typing.get_type_hints(method)["return"]
            assert issubclass(returned, Awaitable), name
            assert issubclass(returned, AbstractAsyncContextManager), name
        else:
            assert inspect.iscoroutinefunction(method), name
