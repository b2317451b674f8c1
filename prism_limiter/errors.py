"""The error tree of prism_limiter.

::

    PrismLimiterError
    ├── LimitExceeded            .decision
    │   ├── BudgetExceeded
    │   ├── RateLimited          .retry_after_s
    │   └── ModelNotAllowed
    ├── InvalidRequest (also ValueError)   bad arguments; unknown price under "deny"
    ├── PolicyError    (also ValueError)   a policy that cannot be applied
    └── BackendUnavailable                 Redis unreachable and failure mode is closed
        └── NotReplicated                  durable_replicas: fewer replicas acknowledged

A denial is an expected outcome: ``reserve()`` raises a ``LimitExceeded`` subclass because a
``with`` block needs it, and ``try_reserve()`` returns the same decision without raising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prism_limiter.engine._records import Decision

__all__ = [
    "BackendUnavailable",
    "BudgetExceeded",
    "InvalidRequest",
    "LimitExceeded",
    "ModelNotAllowed",
    "NotReplicated",
    "PolicyError",
    "PrismLimiterError",
    "RateLimited",
]


class PrismLimiterError(Exception):
    """Root of every error this library raises."""


class LimitExceeded(PrismLimiterError):
    """A request was denied; ``decision`` says which limit, by how much and until when."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(decision.message)


class BudgetExceeded(LimitExceeded):
    """A budget has no room for the hold (``spent + held + hold > cap``)."""


class RateLimited(LimitExceeded):
    """A rate or concurrency limit has no room now; retry after ``retry_after_s``."""

    @property
    def retry_after_s(self) -> float | None:
        return self.decision.retry_after_s


class ModelNotAllowed(LimitExceeded):
    """The model is denied, not allowed, or the project has no policy."""


class InvalidRequest(PrismLimiterError, ValueError):
    """Bad arguments; nothing was changed."""


class PolicyError(PrismLimiterError, ValueError):
    """A policy that cannot be applied; the message names the offending key."""


class BackendUnavailable(PrismLimiterError):
    """Redis could not be reached (or did not answer in time) and the failure mode is closed.

    When raised by a write, the outcome is unknown: the operation may have run. Every operation
    is idempotent by reservation id, so retrying it with the same id is safe.
    """


class NotReplicated(BackendUnavailable):
    """With ``durable_replicas=N``: the write ran on the primary, but fewer than N replicas
    acknowledged it within ``durable_timeout_s``, so a failover now could lose it.

    The outcome is unknown, as for any ``BackendUnavailable``: retry with the same id (every
    write is idempotent by reservation id); the retry returns once N replicas hold the state.
    ``acknowledged`` and ``wanted`` are the replica counts.
    """

    def __init__(self, message: str, *, acknowledged: int, wanted: int) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.wanted = wanted
