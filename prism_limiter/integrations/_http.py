"""HTTP headers for a decision, for any framework's 429 (or 200) response."""

from __future__ import annotations

import math

from prism_limiter.engine._records import Decision


def decision_headers(decision: Decision) -> dict[str, str]:
    """``Retry-After`` and ``X-Prism-*`` headers describing ``decision``.

    - ``X-Prism-Reservation``: the reservation id (settle or release it by this id from any
      process; a denied one cannot be settled).
    - ``Retry-After`` (whole seconds, rounded up): on a denial with a known time.
    - ``X-Prism-Reason`` and ``X-Prism-Budget`` / ``X-Prism-Limit``: on a denial, why and which.
    - ``X-Prism-Budget-Remaining-USD``: the same quantity on a 200 and a 429: what the tightest
      budget would have left *after this request's hold* (cap - spent - held - this hold). On a
      budget denial it is negative: by how much the request would go over.
    - ``X-Prism-Budget-Resets-At``: when that budget's period ends (UTC).
    - ``X-Prism-Warning``: ``<budget>>=<threshold>`` for each budget whose *booked* spend has
      reached a ``warn_at`` threshold (the rule of the ``budget.warn`` audit entry).
    """
    headers = {"X-Prism-Reservation": decision.reservation_id}
    if decision.retry_after_s is not None and not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
    if not decision.allowed:
        headers["X-Prism-Reason"] = decision.reason or "denied"
        if decision.budget:
            headers["X-Prism-Budget"] = decision.budget
        if decision.limit:
            headers["X-Prism-Limit"] = decision.limit
        if decision.over_by_usd is not None:
            headers["X-Prism-Budget-Remaining-USD"] = f"{-decision.over_by_usd:.6f}"
    elif decision.remaining_usd is not None:
        headers["X-Prism-Budget-Remaining-USD"] = f"{decision.remaining_usd:.6f}"
    if decision.resets_at is not None:
        headers["X-Prism-Budget-Resets-At"] = decision.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if decision.warnings:
        headers["X-Prism-Warning"] = ", ".join(
            f"{w.budget}>={w.threshold:g}" for w in decision.warnings
        )
    return headers
