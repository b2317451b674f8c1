"""HTTP headers for a decision, for any framework's 429 (or 200) response."""

from __future__ import annotations

import math

from prism_limiter._records import Decision


def decision_headers(decision: Decision) -> dict[str, str]:
    """``Retry-After`` and ``X-Prism-*`` headers describing ``decision``.

    A denial gets ``Retry-After`` (whole seconds, rounded up) when a time is known,
    ``X-Prism-Reason``, and the limit that denied it; an allowed request gets the smallest
    remaining budget and any warnings, so clients can slow down before they are blocked.
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
        if decision.cap_usd is not None and decision.spent_usd is not None:
            remaining = decision.cap_usd - decision.spent_usd - (decision.held_usd or 0.0)
            headers["X-Prism-Budget-Remaining-USD"] = f"{max(0.0, remaining):.6f}"
    elif decision.remaining_usd is not None:
        headers["X-Prism-Budget-Remaining-USD"] = f"{max(0.0, decision.remaining_usd):.6f}"
    if decision.resets_at is not None:
        headers["X-Prism-Budget-Resets-At"] = decision.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if decision.warnings:
        headers["X-Prism-Warning"] = ", ".join(
            f"{w.budget}>={w.threshold:g}" for w in decision.warnings
        )
    return headers
