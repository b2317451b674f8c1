"""The pure core shared by ``Limiter`` and ``AsyncLimiter``: plan, call a script, parse.

Nothing here does I/O. Each public operation is a generator (see ``_protocol``) that yields
the Redis requests it needs; the sync and async drivers only execute them. The operations
live by concern: reserving (``_reserve_op``), settling and releasing (``_settle_op``), and
here policy, overrides, the audit stream and reports; ``_core_base`` holds what they share.
"""

from datetime import UTC, date, datetime

from prism_limiter.audit import AuditEvent
from prism_limiter.audit import _ops as _audit_ops
from prism_limiter.audit._chain import AuditVerification
from prism_limiter.engine import _overrides, _validate
from prism_limiter.engine._core_base import CoreBase, EvictingRedis, FailureMode, Held, Settings
from prism_limiter.engine._keys import FS, LS
from prism_limiter.engine._protocol import Command, Op, as_int, text
from prism_limiter.engine._records import (
    BudgetState,
    Override,
    UsageReport,
)
from prism_limiter.engine._replies import (
    budget_states,
)
from prism_limiter.engine._report import add_usage_field, build_report, usage_days, utc_day
from prism_limiter.engine._reserve_op import ReserveOps
from prism_limiter.engine._settle_op import SettleOps
from prism_limiter.errors import InvalidRequest
from prism_limiter.policy._policy import Policy
from prism_limiter.policy._policy_store import PolicyChange

__all__ = ["CoreBase", "EvictingRedis", "FailureMode", "Held", "LimiterCore", "Settings"]


class LimiterCore(ReserveOps, SettleOps):
    """Every operation of one limiter."""

    # -- policy -----------------------------------------------------------------------------

    def apply_policy(self, policy: Policy, actor: str, prune: bool) -> Op[PolicyChange]:
        if not isinstance(policy, Policy):
            raise InvalidRequest(
                f"apply_policy takes a Policy (Policy.from_toml or Policy.load), got"
                f" {type(policy).__name__}"
            )
        _validate.text("actor", actor)
        yield from self._preflight()
        return (yield from self.policies.apply(policy, actor, prune=prune))

    def remove_policy(self, project: str, actor: str) -> Op[PolicyChange]:
        yield from self._preflight()
        return (yield from self.policies.remove(project, actor))

    def projects(self) -> Op[list[str]]:
        yield from self._preflight()
        return (yield from self.policies.projects())

    # -- the audit stream (audit/_ops) -----------------------------------------------------

    def verify_audit(self, project: str, checkpoint: object) -> Op[AuditVerification]:
        return (yield from _audit_ops.verify(self, project, checkpoint))

    def audit_page(
        self, project: str, after: str, block_ms: int | None, first: bool
    ) -> Op[tuple[list[AuditEvent], str]]:
        """One page of ``read_audit``; the first one also checks the circuit breaker."""
        if first:
            yield from _audit_ops.check_project(self, project)
        return (yield from _audit_ops.page(self, project, after, block_ms))

    # -- overrides (engine/_overrides) -----------------------------------------------------

    def grant_override(
        self,
        project: str,
        budget: str,
        *,
        split_value: str | None,
        usd: float,
        ttl_s: float,
        requested_by: str,
        approved_by: str,
        reason: str,
    ) -> Op[Override]:
        return (
            yield from _overrides.grant(
                self,
                project,
                budget,
                split_value=split_value,
                usd=usd,
                ttl_s=ttl_s,
                requested_by=requested_by,
                approved_by=approved_by,
                reason=reason,
            )
        )

    def revoke_override(
        self, project: str, budget: str, *, split_value: str | None, actor: str, reason: str
    ) -> Op[bool]:
        return (
            yield from _overrides.revoke(
                self, project, budget, split_value=split_value, actor=actor, reason=reason
            )
        )

    def list_overrides(self, project: str) -> Op[list[Override]]:
        return (yield from _overrides.listed(self, project))

    def sweep(self, project: str, batch: int = 500) -> Op[int]:
        """Expire every overdue hold of ``project`` now (in batches); returns how many."""
        project = _validate.name("project", project)
        yield from self._preflight(project)
        total = 0
        while True:
            reply = yield self._script("sweep", project, [], batch=batch)
            self._check_reply(reply)
            total += as_int(reply[1])
            if as_int(reply[2]) == 0 or as_int(reply[1]) == 0:
                return total

    def status(self, project: str) -> Op[list[BudgetState]]:
        project = _validate.name("project", project)
        yield from self._preflight(project)
        rules = yield from self.rules(project)
        modes = {b.id: b.mode for b in rules.policy.budgets} if rules.policy else {}
        # Each budget's cap and period as the policy has them now: an instance's stored copy
        # follows a change only with its next reserve, status reports what that will enforce.
        configs = LS.join(f"{cap}{FS}{spec}" for cap, spec in map(rules.cap_and_spec, modes))
        # Status writes only housekeeping (overdue holds swept), which the next call redoes if
        # a failover lost it: it is not a write durable_replicas waits for.
        reply = yield self._script("status", project, [LS.join(modes), configs], writes=False)
        self._check_reply(reply)
        return budget_states(reply, modes)

    def usage(self, project: str, start: date | None, end: date | None) -> Op[UsageReport]:
        """Sum the usage days ``start``..``end`` (each a date or datetime, see ``utc_day``);
        ``start`` defaults to today (UTC), ``end`` to ``start``."""
        project = _validate.name("project", project)
        first = datetime.now(UTC).date() if start is None else utc_day("start", start)
        last = first if end is None else utc_day("end", end)
        days = usage_days(first, last)
        sums: dict[str, dict[str, int]] = {}
        for day in days:
            flat = yield Command(("HGETALL", self.keys(project).usage(day)))
            items = (
                flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
            )
            for fld, value in items:
                add_usage_field(sums, text(fld), text(value))
        return build_report(project, tuple(days), sums)
