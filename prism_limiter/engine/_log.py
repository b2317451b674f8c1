"""The library's logger. Event names are stable and dotted; logging is never configured here."""

from __future__ import annotations

import structlog

logger = structlog.get_logger("prism_limiter")

# Events: prism.settle.estimate_charged, prism.backend.unavailable, prism.backend.degraded,
# prism.policy.stale, prism.policy.applied, prism.release.failed
