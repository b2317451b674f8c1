"""The pure core shared by ``Limiter`` and ``AsyncLimiter``: plan, call a script, parse.

Nothing here does I/O. Each public operation is a generator (see ``_protocol``) that yields
the Redis requests it needs; the sync and async drivers only execute them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from time import perf_counter
from typing import Any, Literal

import msgspec

from prism_limiter import _audit_ops, _overrides, _validate
from prism_limiter._audit_chain import AuditVerification
from prism_limiter._breaker import Breaker
from prism_limiter._keys import LS, ProjectKeys
from prism_limiter._listener import Listener
from prism_limiter._log import logger
from prism_limiter._money import nano_to_usd
from prism_limiter._plan import Request, plan_reserve, request, settle_fallback
from prism_limiter._policy import Policy
from prism_limiter._policy_store import PolicyChange, PolicyStore
from prism_limiter._pricing import ModelPrice, TokenUsage
from prism_limiter._protocol import Command, Op, Script, as_int, text
from prism_limiter._records import (
    BudgetState,
    Decision,
    Override,
    Settlement,
    UsageReport,
)
from prism_limiter._replies import (
    budget_states,
    decision_from_reply,
    model_message,
    record_model,
    settlement,
)
from prism_limiter._report import add_usage_row, build_report, usage_days, utc_day
from prism_limiter._rules import BudgetMatch, ProjectRules
from prism_limiter.audit import AuditEvent
from prism_limiter.errors import BackendUnavailable, InvalidRequest, PrismLimiterError

_MAX_STALE_RETRIES = 3
FailureMode = Literal["closed", "open"]
EvictingRedis = Literal["refuse", "warn"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Operational settings of a limiter (not policy): where state lives and how it is kept."""

    namespace: str = "prism"
    failure_mode: FailureMode = "closed"
    evicting_redis: EvictingRedis = "refuse"
    max_projects: int = 10_000
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    audit_retention_days: int = 400
    usage_retention_days: int = 400
    record_retention_s: int = 7 * 86400
    sweep_batch: int = 32


@dataclass(slots=True)
class Held:
    """Everything a reservation needs to settle or release without another lookup.

    The ``Decision`` of an allowed reserve is built on first read (most callers never read
    it): ``allowed`` and ``degraded`` answer the hot path without building it.
    """

    project: str
    reservation_id: str
    model: str
    tags: dict[str, str]
    est_tokens: int
    max_output_tokens: int
    price: ModelPrice | None
    budgets: list[BudgetMatch]
    made: Decision | Callable[[], Decision]  # a factory only for allowed, checked reserves
    finished: bool = field(default=False)

    @property
    def decision(self) -> Decision:
        made = self.made
        if not isinstance(made, Decision):
            made = self.made = made()
        return made

    @property
    def allowed(self) -> bool:
        return not isinstance(self.made, Decision) or self.made.allowed

    @property
    def degraded(self) -> bool:
        return isinstance(self.made, Decision) and self.made.degraded


def _config_value(reply: Any) -> str:
    """The value of a one-parameter ``CONFIG GET`` (a dict or a flat list; a cluster node's)."""
    if isinstance(reply, dict):
        values = list(reply.values())
        while values and isinstance(values[0], dict):
            values = list(values[0].values())
        return text(values[0]) if values else ""
    return text(reply[1]) if isinstance(reply, list | tuple) and len(reply) > 1 else ""


class LimiterCore:
    """State shared by every operation of one limiter: settings and the policy cache."""

    def __init__(self, settings: Settings) -> None:
        _validate.name("namespace", settings.namespace)
        self.settings = settings
        self._keys: dict[str, ProjectKeys] = {}
        self._heads: dict[str, tuple[str | int, ...]] = {}
        self.policies = PolicyStore(
            settings.namespace,
            settings.audit_retention_days * 86400 * 1000,
            self.keys,
            settings.max_projects,
        )
        self._memory_policy_checked = False
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.listener: Listener | None = None  # an observer (metrics); see _listener

    def _emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Tell the listener; its failure is logged, never raised into the caller's call."""
        try:
            getattr(self.listener, event)(*args, **kwargs)
        except Exception as exc:
            logger.warning("prism.listener.failed", hook=event, error=repr(exc))

    # -- plumbing ---------------------------------------------------------------------------

    def keys(self, project: str) -> ProjectKeys:
        keys = self._keys.get(project)
        if keys is None:
            keys = self._keys[project] = ProjectKeys(self.settings.namespace, project)
        return keys

    def _head(self, project: str, batch: int | None = None) -> tuple[str | int, ...]:
        s = self.settings
        return (
            project,
            s.audit_retention_days * 86400 * 1000,
            s.usage_retention_days * 86400,
            s.record_retention_s * 1000,
            batch or s.sweep_batch,
        )

    def _script(
        self, name: str, project: str, args: list[str | int], batch: int | None = None
    ) -> Script:
        head = self._heads.get(project) if batch is None else None
        if head is None:
            head = self._head(project, batch)
            if batch is None:
                self._heads[project] = head
        return Script(name, self.keys(project).script_keys(), [*head, *args])

    @staticmethod
    def _check_reply(reply: list[Any]) -> str:
        kind = text(reply[0])
        if kind == "clock":
            raise PrismLimiterError(
                "this host's clock differs from the Redis server's by more than a day"
                f" (server time {as_int(reply[1])})"
            )
        if kind == "badargs":  # a script refused its arguments before reading anything
            raise PrismLimiterError(f"a script refused malformed arguments ({text(reply[1])})")
        if kind == "damaged":
            raise PrismLimiterError(
                "the stored record of this reservation is unreadable (edited by hand?);"
                " nothing was changed"
            )
        return kind

    def observe(self, error: PrismLimiterError | None) -> None:
        """Each I/O's outcome, reported by the driver: feeds the circuit breaker."""
        if error is None:
            self.breaker.succeeded()
        elif isinstance(error, BackendUnavailable):
            self.breaker.failed()

    def trust_memory_policy(self) -> None:
        self._memory_policy_checked = True

    def _preflight(self) -> Op[None]:
        """Before an operation's first I/O: fail fast while the circuit breaker is open; and
        once per client, ask whether Redis may evict our keys.

        Under an ``allkeys-*`` maxmemory-policy Redis may evict a budget hash, which silently
        resets its spend to 0. Such a server is refused (``BackendUnavailable``, so the failure
        mode applies, and checked again on the next call) unless ``evicting_redis="warn"``.
        """
        self.breaker.check()
        if self._memory_policy_checked:
            return
        try:
            reply = yield Command(("CONFIG", "GET", "maxmemory-policy"))
        except BackendUnavailable:
            raise
        except PrismLimiterError as exc:  # CONFIG renamed or not permitted: cannot tell
            logger.warning("prism.redis.memory_policy_unknown", error=str(exc))
            self._memory_policy_checked = True
            return
        policy = _config_value(reply)
        if policy.startswith("allkeys-"):
            message = (
                f"Redis maxmemory-policy is {policy}: it may evict a budget and reset its spend"
                " to 0; set maxmemory-policy noeviction (or pass evicting_redis='warn')"
            )
            if self.settings.evicting_redis == "refuse":
                logger.error("prism.redis.evicting", maxmemory_policy=policy, action="refused")
                raise BackendUnavailable(message)
            logger.warning("prism.redis.evicting", maxmemory_policy=policy, action="warned")
        elif policy.startswith("volatile-"):
            logger.warning(
                "prism.redis.evicting",
                maxmemory_policy=policy,
                action="warned",
                hint="budgets and holds have no TTL and stay; attribution (usage:<day>) may go",
            )
        self._memory_policy_checked = True

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

    def rules(self, project: str) -> Op[ProjectRules]:
        return (yield from self.policies.rules(project))

    def projects(self) -> Op[list[str]]:
        yield from self._preflight()
        return (yield from self.policies.projects())

    # -- reserve ----------------------------------------------------------------------------

    def reserve(
        self,
        project: str,
        model: str,
        est_tokens: int,
        *,
        max_output_tokens: int | None = None,
        max_cache_write_tokens: int | None = None,
        tags: dict[str, str] | None = None,
        ttl_s: float | None = None,
        reservation_id: str | None = None,
        provider: str | None = None,
    ) -> Op[Held]:
        req = request(
            project,
            model,
            est_tokens,
            max_output_tokens=max_output_tokens,
            max_cache_write_tokens=max_cache_write_tokens,
            tags=tags,
            ttl_s=ttl_s,
            reservation_id=reservation_id,
            provider=provider,
        )
        t0 = perf_counter() if self.listener is not None else 0.0
        for _ in range(_MAX_STALE_RETRIES + 1):
            try:
                yield from self._preflight()
                rules = yield from self.rules(req.project)
                plan = plan_reserve(rules, req)
                if rules.unregistered and plan.denial is None:
                    # First accepted reserve of a project [defaults] covers: store its copy.
                    yield from self.policies.register(req.project)
                    continue
                reply = yield self._script("reserve", req.project, plan.args)
            except BackendUnavailable as exc:
                degraded = self._degraded(exc, req)
                if self.listener is not None:
                    self._emit("reserved", degraded, perf_counter() - t0)
                return degraded
            kind = self._check_reply(reply)
            if kind == "stale":
                logger.debug("prism.policy.stale", project=req.project, version=rules.version)
                self.policies.forget(req.project)
                continue
            decide = functools.partial(
                decision_from_reply,
                kind=kind,
                reply=reply,
                project=req.project,
                model=req.model,
                canonical=plan.entry.canonical,
                rid=req.reservation_id,
                budgets=plan.budgets,
            )
            fields = (
                req.project,
                req.reservation_id,
                plan.entry.canonical,
                req.tags,
                req.est_tokens,
                plan.out_tokens,
                plan.price,
                plan.budgets,
            )
            # The common case, ok: the decision is built only if it is read.
            held = Held(*fields, decide if kind == "ok" else decide())
            if self.listener is not None:
                self._emit("reserved", held, perf_counter() - t0)
            return held
        raise PrismLimiterError(f"policy of {project!r} kept changing during one reserve")

    def _degraded(self, exc: BackendUnavailable, req: Request) -> Held:
        """Redis cannot answer: raise (closed), or decide without it and say so (open).

        Open mode still enforces the model allow/deny lists (and an unknown price under
        ``on_unknown_price = "deny"``) from the project's cached policy; budgets and rate limits
        cannot be checked. A project this worker never loaded is allowed unchecked.
        """
        if self.settings.failure_mode == "closed":
            if self.listener is not None:
                self._emit("unavailable", "reserve", req.project)
            raise exc
        cached = self.policies.cached(req.project)
        plan = plan_reserve(cached, req) if cached is not None else None
        denial = plan.denial if plan is not None else None
        logger.warning(
            "prism.backend.degraded",
            project=req.project,
            model=req.model,
            reservation_id=req.reservation_id,
            error=str(exc),
            action="denied" if denial else "allowed",
            policy="cached" if cached is not None else "unknown",
        )
        if denial is not None:
            decision = Decision(
                allowed=False,
                project=req.project,
                model=req.model,
                reservation_id=req.reservation_id,
                reason=denial,
                degraded=True,
                message=model_message(req.project, req.model, denial) + " (cached policy)",
            )
        else:
            decision = Decision(
                allowed=True,
                project=req.project,
                model=req.model,
                reservation_id=req.reservation_id,
                degraded=True,
                message=f"allowed without a budget check: {exc}",
            )
        held = Held(
            req.project,
            req.reservation_id,
            req.model,
            req.tags,
            req.est_tokens,
            plan.out_tokens if plan is not None else (req.max_output_tokens or 0),
            plan.price if plan is not None else None,
            [],
            decision,
        )
        held.finished = True
        return held

    # -- settle / release -------------------------------------------------------------------

    def settle(
        self,
        project: str,
        reservation_id: str,
        usage: TokenUsage,
        *,
        held: Held | None = None,
        model: str | None = None,
        tags: dict[str, str] | None = None,
        provider: str | None = None,
        estimate: bool = False,
    ) -> Op[Settlement]:
        """Book ``usage``. Without ``held`` the record (or ``model``) says how to price it.

        ``estimate``: this books the estimate of a reservation left without a settle; a later
        real settle books the difference to its actual usage, once.

        A reservation taken degraded (Redis down, failure mode open) is booked now like an id
        the project never saw (``settle.unknown``). When Redis cannot take the settle, the usage
        is logged as ``prism.settle.unbooked`` with everything needed to replay it (see the
        README); open mode then returns a ``degraded`` settlement, closed mode raises.
        """
        if held is not None and not held.allowed:
            raise InvalidRequest(
                f"this reservation was denied ({held.decision.reason}): {held.decision.message};"
                " there is nothing to settle"
            )
        project = _validate.name("project", project)
        rid = _validate.reservation_id(reservation_id)
        tag_map = _validate.tags(tags) if held is None else held.tags
        model = _validate.model(model) if model is not None else (held.model if held else None)
        t0 = perf_counter() if self.listener is not None else 0.0
        try:
            booked, model = yield from self._settle(
                project,
                rid,
                usage,
                held=held,
                model=model,
                tags=tag_map,
                provider=provider,
                estimate=estimate,
            )
        except BackendUnavailable as exc:
            u = usage
            logger.warning(
                "prism.settle.unbooked",
                project=project,
                reservation_id=rid,
                model=model,
                tags=tag_map,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                cache_write_1h_tokens=u.cache_write_1h_tokens,
                error=str(exc),
            )
            if self.settings.failure_mode == "closed":
                if self.listener is not None:
                    self._emit("unavailable", "settle", project)
                raise
            price = held.price if held is not None else None
            cost = nano_to_usd(price.cost_nano(usage)) if price else 0.0
            booked = Settlement(
                reservation_id=rid,
                cost_usd=cost,
                hold_usd=0.0,
                refunded_usd=0.0,
                over_estimate=False,
                first=True,
                late=False,
                degraded=True,
            )
        if self.listener is not None:
            self._emit(
                "settled",
                project,
                model or "",
                tag_map,
                booked,
                estimate=estimate,
                seconds=perf_counter() - t0,
            )
        return booked

    def _settle(
        self,
        project: str,
        rid: str,
        usage: TokenUsage,
        *,
        held: Held | None,
        model: str | None,
        tags: dict[str, str],
        provider: str | None,
        estimate: bool,
    ) -> Op[tuple[Settlement, str]]:
        """Book it; returns the settlement and the model it was priced for."""
        tag_map = tags
        stored = model is None  # read back from the record: its canonical spelling
        yield from self._preflight()
        if model is None:
            raw = yield Command(("HGET", self.keys(project).prefix + "holds", rid))
            if raw is None:
                raise InvalidRequest(
                    f"reservation {rid!r} is unknown in project {project!r}; pass model= (and"
                    " tags=) to book it anyway"
                )
            model = record_model(raw)
            if model is None:
                raise PrismLimiterError(
                    f"the stored record of reservation {rid!r} is unreadable; pass model= to"
                    " settle it, or release it"
                )
        if held is not None and not held.degraded:
            price, budgets = held.price, held.budgets
        else:
            rules = yield from self.rules(project)
            entry = rules.model(model, provider, stored=stored)
            model, price, budgets = entry.canonical, entry.price, rules.budgets(entry, tag_map)
        cost = price.cost_nano(usage) if price else 0
        u = usage
        head: list[str | int] = [
            rid,
            cost,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
        ]
        mode = "e" if estimate else ""
        reply = yield self._script("settle", project, [*head, mode, ""])
        if self._check_reply(reply) == "unknown":
            # Rare: an id this project does not know (never reserved, taken degraded, or past
            # retention). Book it from what the caller knows, in a second call.
            fallback = settle_fallback(model, tag_map, budgets)
            reply = yield self._script("settle", project, [*head, mode, *fallback])
        if self._check_reply(reply) == "denied":
            raise InvalidRequest(
                f"reservation {rid!r} was denied ({text(reply[1])}): there is nothing to settle"
            )
        if held is not None:
            held.finished = True
        return settlement(rid, reply), model

    # -- the audit stream (prism_limiter._audit_ops) -------------------------------------------

    def verify_audit(self, project: str, checkpoint: object) -> Op[AuditVerification]:
        return (yield from _audit_ops.verify(self, project, checkpoint))

    def audit_page(
        self, project: str, after: str, block_ms: int | None, first: bool
    ) -> Op[tuple[list[AuditEvent], str]]:
        """One page of ``read_audit``; the first one also checks the circuit breaker."""
        if first:
            yield from _audit_ops.check_project(self, project)
        return (yield from _audit_ops.page(self, project, after, block_ms))

    # -- overrides (prism_limiter._overrides) ------------------------------------------------

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

    def release_held(self, held: Held) -> Op[bool]:
        if not held.allowed:
            raise InvalidRequest(
                f"this reservation was denied ({held.decision.reason}): there is nothing to release"
            )
        if held.degraded:
            return False
        released = yield from self.release(held.project, held.reservation_id)
        held.finished = True
        return released

    def release(self, project: str, reservation_id: str) -> Op[bool]:
        """Return a hold; True when this call released it, False when it had already ended."""
        project = _validate.name("project", project)
        rid = _validate.reservation_id(reservation_id)
        t0 = perf_counter() if self.listener is not None else 0.0
        try:
            yield from self._preflight()
            reply = yield self._script("release", project, [rid])
        except BackendUnavailable:
            if self.listener is not None:
                self._emit("unavailable", "release", project)
            raise
        kind = self._check_reply(reply)
        if kind == "denied":
            raise InvalidRequest(
                f"reservation {rid!r} was denied ({text(reply[1])}): there is nothing to release"
            )
        released = kind == "released" and text(reply[1]) == "H"
        if self.listener is not None:
            self._emit("released", project, rid, released, perf_counter() - t0)
        return released

    def sweep(self, project: str, batch: int = 500) -> Op[int]:
        """Expire every overdue hold of ``project`` now (in batches); returns how many."""
        project = _validate.name("project", project)
        yield from self._preflight()
        total = 0
        while True:
            reply = yield self._script("sweep", project, [], batch=batch)
            self._check_reply(reply)
            total += as_int(reply[1])
            if as_int(reply[2]) == 0 or as_int(reply[1]) == 0:
                return total

    def status(self, project: str) -> Op[list[BudgetState]]:
        project = _validate.name("project", project)
        yield from self._preflight()
        rules = yield from self.rules(project)
        modes = {b.id: b.mode for b in rules.policy.budgets} if rules.policy else {}
        reply = yield self._script("status", project, [LS.join(modes)])
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
                add_usage_row(sums, text(fld), text(value))
        return build_report(project, tuple(days), sums)
