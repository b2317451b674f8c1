"""prism_limiter: atomic LLM spend governance on Redis.

Before every LLM call, ``limiter.reserve(project, model, est_tokens)`` checks every budget and
model policy that applies in one Lua script, holds the estimated cost, and ``settle`` books the
actual usage afterwards. Every decision lands in the project's audit stream
(``prism_limiter.audit`` has its typed entries).
"""

from prism_limiter.audit._chain import AuditCheckpoint, AuditVerification
from prism_limiter.audit._export import AuditExporter
from prism_limiter.engine._async import AsyncLimiter
from prism_limiter.engine._limiter import Limiter
from prism_limiter.engine._records import (
    BudgetState,
    BudgetWarning,
    Decision,
    Override,
    Settlement,
    UsageReport,
    UsageRow,
)
from prism_limiter.engine._reservation import AsyncReservation, Reservation
from prism_limiter.errors import (
    BackendUnavailable,
    BudgetExceeded,
    InvalidRequest,
    LimitExceeded,
    ModelNotAllowed,
    NotReplicated,
    PolicyError,
    PrismLimiterError,
    RateLimited,
)
from prism_limiter.integrations._http import decision_headers
from prism_limiter.integrations._tags_header import HEADER as TAGS_HEADER
from prism_limiter.integrations._tags_header import format_tags_header, parse_tags_header
from prism_limiter.policy._policy import (
    BudgetPolicy,
    Policy,
    PriceOverride,
    ProjectPolicy,
    RateLimitPolicy,
)
from prism_limiter.pricing._estimate import estimate_tokens
from prism_limiter.pricing._pricing import TokenUsage

__all__ = [
    "TAGS_HEADER",
    "AsyncLimiter",
    "AsyncReservation",
    "AuditCheckpoint",
    "AuditExporter",
    "AuditVerification",
    "BackendUnavailable",
    "BudgetExceeded",
    "BudgetPolicy",
    "BudgetState",
    "BudgetWarning",
    "Decision",
    "InvalidRequest",
    "LimitExceeded",
    "Limiter",
    "ModelNotAllowed",
    "NotReplicated",
    "Override",
    "Policy",
    "PolicyError",
    "PriceOverride",
    "PrismLimiterError",
    "ProjectPolicy",
    "RateLimitPolicy",
    "RateLimited",
    "Reservation",
    "Settlement",
    "TokenUsage",
    "UsageReport",
    "UsageRow",
    "decision_headers",
    "estimate_tokens",
    "format_tags_header",
    "parse_tags_header",
]

__version__ = "0.1.0"
