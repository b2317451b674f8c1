"""The pure core shared by ``Limiter`` and ``AsyncLimiter``: plan, call a script, parse.

Nothing here does I/O. Each public operation is a generator (see ``_protocol``) that yields
the Redis requests it needs; the sync and async drivers only execute them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from prism_limiter import _tz, _validate
from prism_limiter._keys import (
    ProjectKeys,
    global_policy_key,
    instance_id,
    projects_key,
    unescape,
    usage_dimensions,
)
from prism_limiter._log import logger
from prism_limiter._money import nano_to_usd, usd_to_nano
from prism_limiter._policy import Policy, decode_project, encode_project
from prism_limiter._pricing import ModelPrice, TokenUsage
from prism_limiter._protocol import Command, Op, Script, as_int, text
from prism_limiter._records import (
    BudgetState,
    BudgetWarning,
    Decision,
    Override,
    Settlement,
    UsageReport,
    UsageRow,
)
from prism_limiter._rules import LS, BudgetMatch, ProjectRules
from prism_limiter.errors import BackendUnavailable, InvalidRequest, PrismLimiterError

FS = "\x1f"
_MAX_STALE_RETRIES = 3
FailureMode = Literal["closed", "open"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Operational settings of a limiter (not policy): where state lives and how it is kept."""

    namespace: str = "prism"
    failure_mode: FailureMode = "closed"
    audit_maxlen: int = 1_000_000
    usage_retention_days: int = 400
    record_retention_s: int = 7 * 86400
    sweep_batch: int = 32


@dataclass(slots=True)
class Held:
    """Everything a reservation needs to settle or release without another lookup."""

    project: str
    reservation_id: str
    model: str
    tags: dict[str, str]
    est_tokens: int
    max_output_tokens: int
    hold_nano: int
    price: ModelPrice | None
    budgets: list[BudgetMatch]
    decision: Decision
    finished: bool = field(default=False)


def _ts(seconds: Any) -> datetime | None:
    value = as_int(seconds)
    return datetime.fromtimestamp(value, UTC) if value else None


def _budget_label(budget: str, split: str | None) -> str:
    return f"budget {budget!r}" + (f" for {split!r}" if split else "")


class LimiterCore:
    """State shared by every operation of one limiter: settings and the policy cache."""

    def __init__(self, settings: Settings) -> None:
        _validate.name("namespace", settings.namespace)
        self.settings = settings
        self._rules: dict[str, ProjectRules] = {}
        self._keys: dict[str, ProjectKeys] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def keys(self, project: str) -> ProjectKeys:
        keys = self._keys.get(project)
        if keys is None:
            keys = self._keys[project] = ProjectKeys(self.settings.namespace, project)
        return keys

    def _head(self, project: str, batch: int | None = None) -> list[str | int]:
        s = self.settings
        return [
            project,
            s.audit_maxlen,
            s.usage_retention_days * 86400,
            s.record_retention_s * 1000,
            batch or s.sweep_batch,
        ]

    def _script(
        self, name: str, project: str, args: list[str | int], batch: int | None = None
    ) -> Script:
        return Script(name, self.keys(project).script_keys(), [*self._head(project, batch), *args])

    @staticmethod
    def _check_reply(reply: list[Any]) -> str:
        kind = text(reply[0])
        if kind == "clock":
            raise PrismLimiterError(
                "this host's clock differs from the Redis server's by more than a day"
                f" (server time {as_int(reply[1])})"
            )
        return kind

    # -- policy -----------------------------------------------------------------------------

    def apply_policy(self, policy: Policy, actor: str) -> Op[int]:
        """Store ``policy`` under a new version for every listed and every known project."""
        actor = _validate.text("actor", actor)
        ns = self.settings.namespace
        doc = msgspec.json.encode(policy).decode()
        version = as_int((yield Script("bump_policy", [global_policy_key(ns)], [doc, actor])))
        if policy.projects:
            yield Command(("SADD", projects_key(ns), *policy.projects))
        known = yield Command(("SMEMBERS", projects_key(ns)))
        for project in sorted({text(p) for p in known}):
            yield from self._store_project(project, policy, version, actor)
        self._rules.clear()
        logger.info("prism.policy.applied", version=version, actor=actor)
        return version

    def _store_project(self, project: str, policy: Policy, version: int, actor: str) -> Op[None]:
        keys = self.keys(project)
        pp = policy.for_project(project)
        zones = _tz.for_zones({b.timezone for b in pp.budgets} if pp else set())
        args: list[str | int] = [
            project,
            self.settings.audit_maxlen,
            version,
            encode_project(pp).decode() if pp else "",
            actor,
            len(zones),
        ]
        for zone, table in zones:
            args += [zone, table]
        yield Script("apply_policy", [keys.policy, keys.audit], args)

    def rules(self, project: str) -> Op[ProjectRules]:
        """The project's compiled policy, loaded on first use and after a stale reply."""
        cached = self._rules.get(project)
        if cached is not None:
            return cached
        keys = self.keys(project)
        version, doc = yield Command(("HMGET", keys.policy, "v", "doc"))
        if version is None:  # first request of a project the policy does not list
            ns = self.settings.namespace
            yield Command(("SADD", projects_key(ns), project))
            gversion, gdoc = yield Command(("HMGET", global_policy_key(ns), "v", "doc"))
            if gversion is not None:
                policy = msgspec.json.decode(gdoc, type=Policy)
                yield from self._store_project(project, policy, as_int(gversion), "defaults")
                version, doc = yield Command(("HMGET", keys.policy, "v", "doc"))
        policy_doc = text(doc) if doc is not None else ""
        rules = ProjectRules(
            project,
            decode_project(policy_doc.encode()) if policy_doc else None,
            as_int(version) if version is not None else 0,
        )
        self._rules[project] = rules
        return rules

    # -- reserve ----------------------------------------------------------------------------

    def reserve(
        self,
        project: str,
        model: str,
        est_tokens: int,
        *,
        max_output_tokens: int | None = None,
        tags: dict[str, str] | None = None,
        ttl_s: float | None = None,
        reservation_id: str | None = None,
        provider: str | None = None,
    ) -> Op[Held]:
        project = _validate.name("project", project)
        model = _validate.model(model)
        est = _validate.tokens("est_tokens", est_tokens)
        if max_output_tokens is not None:
            _validate.tokens("max_output_tokens", max_output_tokens)
        tag_map = _validate.tags(tags)
        if ttl_s is not None:
            _validate.seconds("ttl_s", ttl_s)
        if provider is not None:
            _validate.name("provider", provider)
        rid = (
            _validate.reservation_id(reservation_id)
            if reservation_id is not None
            else uuid.uuid4().hex
        )
        for _ in range(_MAX_STALE_RETRIES + 1):
            try:
                rules = yield from self.rules(project)
            except BackendUnavailable as exc:
                return self._degraded(
                    exc=exc,
                    project=project,
                    model=model,
                    rid=rid,
                    tags=tag_map,
                    est=est,
                    out_tokens=max_output_tokens,
                )
            pol = rules.policy
            default_out = pol.default_max_output_tokens if pol else 0
            out_tokens = default_out if max_output_tokens is None else max_output_tokens
            denial = rules.denial(model)
            price = rules.price(model, provider) if denial is None else None
            flags = ""
            if denial is None and price is None:
                if pol is not None and pol.on_unknown_price == "deny":
                    raise InvalidRequest(
                        f"no price is known for model {model!r}; add it to the policy's"
                        ' [projects.<name>.prices] or set on_unknown_price = "allow"'
                    )
                flags = "u"
            hold = price.hold_nano(est, out_tokens) if price else 0
            budgets = rules.budgets(model, tag_map) if denial is None else []
            ttl_ms = int((ttl_s or (pol.hold_ttl_s if pol else 600.0)) * 1000)
            args: list[str | int] = [
                str(rules.version),
                rid,
                denial or "",
                hold,
                ttl_ms,
                model,
                json.dumps(tag_map, separators=(",", ":"), ensure_ascii=False),
                LS.join(usage_dimensions(model, tag_map)),
                est,
                out_tokens,
                flags,
                len(budgets),
            ]
            for b in budgets:
                args += b.script_args()
            limits = rules.rate_limits(model, tag_map) if denial is None else []
            args.append(len(limits))
            for lim in limits:
                args += lim.script_args()
            try:
                reply = yield self._script("reserve", project, args)
            except BackendUnavailable as exc:
                return self._degraded(
                    exc=exc,
                    project=project,
                    model=model,
                    rid=rid,
                    tags=tag_map,
                    est=est,
                    out_tokens=out_tokens,
                )
            kind = self._check_reply(reply)
            if kind == "stale":
                logger.debug("prism.policy.stale", project=project, version=rules.version)
                self._rules.pop(project, None)
                continue
            decision = self._decision(
                kind=kind, reply=reply, project=project, model=model, rid=rid, budgets=budgets
            )
            hold_nano = _record_hold(reply) if decision.replayed else hold
            return Held(
                project, rid, model, tag_map, est, out_tokens, hold_nano, price, budgets, decision
            )
        raise PrismLimiterError(f"policy of {project!r} kept changing during one reserve")

    def _degraded(
        self,
        *,
        exc: BackendUnavailable,
        project: str,
        model: str,
        rid: str,
        tags: dict[str, str],
        est: int,
        out_tokens: int | None,
    ) -> Held:
        if self.settings.failure_mode == "closed":
            raise exc
        logger.warning(
            "prism.backend.degraded",
            project=project,
            model=model,
            reservation_id=rid,
            error=str(exc),
        )
        decision = Decision(
            allowed=True,
            project=project,
            model=model,
            reservation_id=rid,
            degraded=True,
            message=f"allowed without a check: {exc}",
        )
        held = Held(project, rid, model, tags, est, out_tokens or 0, 0, None, [], decision)
        held.finished = True
        return held

    def _decision(
        self,
        *,
        kind: str,
        reply: list[Any],
        project: str,
        model: str,
        rid: str,
        budgets: list[BudgetMatch],
    ) -> Decision:
        def make(**fields: Any) -> Decision:
            return Decision(project=project, model=model, reservation_id=rid, **fields)

        if kind == "dup":
            rec = text(reply[1]).split(FS)
            if rec[4] != model:
                raise InvalidRequest(
                    f"reservation id {rid!r} was already used for model {rec[4]!r}"
                )
            deadline = int(rec[2])
            return make(
                allowed=True,
                replayed=True,
                hold_usd=nano_to_usd(int(rec[1])),
                expires_at=datetime.fromtimestamp(deadline / 1000, UTC),
                message=f"reservation {rid!r} already exists (state {rec[0]}); nothing changed",
            )
        if kind == "denied":
            what = text(reply[1])
            if what == "model":
                reason = text(reply[2])
                messages = {
                    "model-denied": f"model {model!r} is denied for project {project!r}",
                    "model-not-allowed": f"model {model!r} is not in project {project!r}'s"
                    " allow list",
                    "no-policy": f"project {project!r} has no policy (and there are no defaults)",
                }
                return make(allowed=False, reason=reason, message=messages[reason])
            if what == "rate":
                return _rate_denial(make, reply)
            budget, split = text(reply[2]), text(reply[3]) or None
            cap, spent, held, hold = (as_int(x) for x in reply[4:8])
            resets = _ts(reply[9])
            over = spent + held + hold - cap
            now = datetime.now(UTC)
            label = _budget_label(budget, split)
            return make(
                allowed=False,
                reason="budget",
                budget=budget,
                split_value=split,
                cap_usd=nano_to_usd(cap),
                spent_usd=nano_to_usd(spent),
                held_usd=nano_to_usd(held),
                hold_usd=nano_to_usd(hold),
                over_by_usd=nano_to_usd(over),
                resets_at=resets,
                retry_after_s=max(0.0, (resets - now).total_seconds()) if resets else None,
                message=(
                    f"{label} would go over its cap of ${nano_to_usd(cap):.6f} by"
                    f" ${nano_to_usd(over):.6f} (spent ${nano_to_usd(spent):.6f}, held"
                    f" ${nano_to_usd(held):.6f}, this request ${nano_to_usd(hold):.6f})"
                ),
            )
        # ok: hold, deadline, now, then five values per budget
        hold = as_int(reply[1])
        states, warnings = [], []
        for i, b in enumerate(budgets):
            spent, held, cap, start, end = reply[4 + 5 * i : 9 + 5 * i]
            spent_n, held_n, cap_n = as_int(spent), as_int(held), as_int(cap)
            states.append(
                BudgetState(
                    budget=b.budget.id,
                    split_value=b.split_value,
                    cap_usd=nano_to_usd(cap_n),
                    spent_usd=nano_to_usd(spent_n),
                    held_usd=nano_to_usd(held_n),
                    remaining_usd=nano_to_usd(cap_n - spent_n - held_n),
                    period_start=_ts(start),
                    resets_at=_ts(end),
                )
            )
            used = (spent_n + held_n) / cap_n if cap_n else 1.0
            crossed = [f for f in b.budget.warn_at if used >= f]
            if crossed:
                warnings.append(
                    BudgetWarning(
                        budget=b.budget.id,
                        split_value=b.split_value,
                        threshold=max(crossed),
                        used_fraction=used,
                    )
                )
        return make(
            allowed=True,
            hold_usd=nano_to_usd(hold),
            expires_at=datetime.fromtimestamp(as_int(reply[2]) / 1000, UTC),
            budgets=tuple(states),
            warnings=tuple(warnings),
            resets_at=min((s.resets_at for s in states if s.resets_at), default=None),
        )

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
    ) -> Op[Settlement]:
        """Book ``usage``. Without ``held`` the record (or ``model``) says how to price it."""
        if held is not None and held.decision.degraded:
            # Taken unchecked while Redis was down: there is no hold to settle. Log the usage so
            # the spend can be reconciled; it is never silently dropped.
            logger.warning(
                "prism.backend.degraded",
                project=held.project,
                reservation_id=held.reservation_id,
                model=held.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                action="settle-not-booked",
            )
            return Settlement(
                reservation_id=held.reservation_id,
                cost_usd=0.0,
                hold_usd=0.0,
                refunded_usd=0.0,
                over_estimate=False,
                first=True,
                late=False,
            )
        project = _validate.name("project", project)
        rid = _validate.reservation_id(reservation_id)
        tag_map = _validate.tags(tags) if held is None else held.tags
        model = _validate.model(model) if model is not None else (held.model if held else None)
        if model is None:
            raw = yield Command(("HGET", self.keys(project).prefix + "holds", rid))
            if raw is None:
                raise InvalidRequest(
                    f"reservation {rid!r} is unknown in project {project!r}; pass model= (and"
                    " tags=) to book it anyway"
                )
            model = text(raw).split(FS)[4]
        if held is not None:
            price, budgets = held.price, held.budgets
        else:
            rules = yield from self.rules(project)
            price, budgets = rules.price(model, provider), rules.budgets(model, tag_map)
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
        reply = yield self._script("settle", project, [*head, ""])
        if self._check_reply(reply) == "unknown":
            # Rare: an id this project does not know (never reserved, or its record is past
            # retention). Book it from what the caller knows, in a second call.
            fallback: list[str | int] = [
                model,
                json.dumps(tag_map, separators=(",", ":"), ensure_ascii=False),
                LS.join(usage_dimensions(model, tag_map)),
                len(budgets),
            ]
            for b in budgets:
                fallback += b.script_args()
            reply = yield self._script("settle", project, [*head, *fallback])
        self._check_reply(reply)
        _, cost_n, hold_n, first, before, over = reply
        cost_i, hold_i, before_s = as_int(cost_n), as_int(hold_n), text(before)
        if held is not None:
            held.finished = True
        return Settlement(
            reservation_id=rid,
            cost_usd=nano_to_usd(cost_i),
            hold_usd=nano_to_usd(hold_i),
            refunded_usd=nano_to_usd(max(0, hold_i - cost_i)) if before_s == "H" else 0.0,
            over_estimate=bool(as_int(over)),
            first=bool(as_int(first)),
            late=before_s in ("R", "X", "E"),
            unknown=before_s == "U",
        )

    def _override_target(
        self, project: str, budget: str, split_value: str | None, actor: str, reason: str
    ) -> Op[tuple[str, str]]:
        """The instance id and label of an override's budget, checked against the policy."""
        _validate.name("project", project)
        _validate.text("actor", actor)
        _validate.text("reason", reason)
        rules = yield from self.rules(project)
        policy = rules.policy
        match = next((b for b in policy.budgets if b.id == budget), None) if policy else None
        if match is None:
            raise InvalidRequest(f"project {project!r} has no budget {budget!r}")
        if (split_value is None) != (match.split_by is None):
            raise InvalidRequest(
                f"budget {budget!r} is split by {match.split_by!r}: pass its split_value"
                if match.split_by
                else f"budget {budget!r} is not split; pass no split_value"
            )
        if split_value is not None:
            _validate.tag_value(match.split_by or "split_value", split_value)
        return instance_id(budget, split_value), f"{budget}{LS}{split_value or ''}"

    def grant_override(
        self,
        project: str,
        budget: str,
        *,
        split_value: str | None,
        usd: float,
        ttl_s: float,
        actor: str,
        reason: str,
    ) -> Op[Override]:
        """Raise one budget instance's cap by ``usd`` until ``ttl_s`` from now (server clock)."""
        extra = usd_to_nano("override usd", usd)
        lifetime_ms = int(_validate.seconds("ttl_s", ttl_s, maximum=366 * 86400) * 1000)
        iid, label = yield from self._override_target(project, budget, split_value, actor, reason)
        args: list[str | int] = [iid, label, "grant", extra, lifetime_ms, actor, reason]
        reply = yield self._script("override", project, args)
        self._check_reply(reply)
        return Override(
            project=project,
            budget=budget,
            split_value=split_value,
            extra_usd=nano_to_usd(extra),
            expires_at=datetime.fromtimestamp(as_int(reply[1]) / 1000, UTC),
            actor=actor,
            reason=reason,
        )

    def revoke_override(
        self, project: str, budget: str, *, split_value: str | None, actor: str, reason: str
    ) -> Op[bool]:
        iid, label = yield from self._override_target(project, budget, split_value, actor, reason)
        reply = yield self._script("override", project, [iid, label, "revoke", 0, 0, actor, reason])
        self._check_reply(reply)
        return bool(as_int(reply[1]))

    def release_held(self, held: Held) -> Op[bool]:
        if held.decision.degraded or not held.decision.allowed:
            return False
        released = yield from self.release(held.project, held.reservation_id)
        held.finished = True
        return released

    def release(self, project: str, reservation_id: str) -> Op[bool]:
        """Return a hold; True when this call released it, False when it had already ended."""
        project = _validate.name("project", project)
        rid = _validate.reservation_id(reservation_id)
        reply = yield self._script("release", project, [rid])
        kind = self._check_reply(reply)
        return kind == "released" and text(reply[1]) == "H"

    def sweep(self, project: str, batch: int = 500) -> Op[int]:
        """Expire every overdue hold of ``project`` now (in batches); returns how many."""
        project = _validate.name("project", project)
        total = 0
        while True:
            reply = yield self._script("sweep", project, [], batch=batch)
            self._check_reply(reply)
            total += as_int(reply[1])
            if as_int(reply[2]) == 0 or as_int(reply[1]) == 0:
                return total

    def status(self, project: str) -> Op[list[BudgetState]]:
        project = _validate.name("project", project)
        reply = yield self._script("status", project, [])
        self._check_reply(reply)
        out = []
        for i in range(3, len(reply), 8):
            _, label, cap, spent, held, start, end, extra = reply[i : i + 8]
            budget, _, split = text(label).partition(LS)
            cap_n, spent_n, held_n = as_int(cap), as_int(spent), as_int(held)
            out.append(
                BudgetState(
                    budget=budget,
                    split_value=split or None,
                    cap_usd=nano_to_usd(cap_n),
                    spent_usd=nano_to_usd(spent_n),
                    held_usd=nano_to_usd(held_n),
                    remaining_usd=nano_to_usd(cap_n - spent_n - held_n),
                    period_start=_ts(start),
                    resets_at=_ts(end),
                    override_usd=nano_to_usd(as_int(extra)),
                )
            )
        return out

    def usage(self, project: str, start: datetime | None, end: datetime | None) -> Op[UsageReport]:
        project = _validate.name("project", project)
        now = datetime.now(UTC)
        days = usage_days(start or now, end or start or now)
        if len(days) > 400:
            raise InvalidRequest("a usage report spans at most 400 days")
        sums: dict[str, dict[str, int]] = {}
        for day in days:
            flat = yield Command(("HGETALL", self.keys(project).usage(day)))
            items = (
                flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
            )
            for fld, value in items:
                dim, _, metric = text(fld).rpartition("|")
                row = sums.setdefault(dim, {})
                row[metric] = row.get(metric, 0) + as_int(value)
        return build_report(project, tuple(days), sums)


def _row(counters: dict[str, int]) -> UsageRow:
    g = counters.get
    return UsageRow(
        cost_usd=nano_to_usd(g("usd", 0)),
        requests=g("req", 0),
        input_tokens=g("in", 0),
        output_tokens=g("out", 0),
        cache_read_tokens=g("cr", 0),
        cache_write_tokens=g("cw", 0),
        expired_holds=g("exp", 0),
    )


def build_report(
    project: str, days: tuple[str, ...], sums: dict[str, dict[str, int]]
) -> UsageReport:
    """Rows per model and per tag value; each tag key gets a ``None`` row for requests without
    it, so that every breakdown sums to the total exactly."""
    total = sums.get("total", {})
    by_model: dict[str, UsageRow] = {}
    by_tag_raw: dict[str, dict[str | None, dict[str, int]]] = {}
    for dim, counters in sums.items():
        if dim.startswith("model="):
            by_model[unescape(dim[6:])] = _row(counters)
        elif dim.startswith("tag:"):
            key, _, value = dim[4:].partition("=")
            by_tag_raw.setdefault(key, {})[unescape(value)] = counters
    by_tag: dict[str, dict[str | None, UsageRow]] = {}
    for key, values in by_tag_raw.items():
        rest = dict(total)
        for counters in values.values():
            for metric, n in counters.items():
                rest[metric] = rest.get(metric, 0) - n
        rows: dict[str | None, UsageRow] = {v: _row(c) for v, c in sorted(values.items())}
        if any(rest.values()):
            rows[None] = _row(rest)
        by_tag[key] = rows
    return UsageReport(
        project=project, days=days, total=_row(total), by_model=by_model, by_tag=by_tag
    )


def _rate_denial(make: Callable[..., Decision], reply: list[Any]) -> Decision:
    limit, split, kind = text(reply[2]), text(reply[3]) or None, text(reply[4])
    retry_ms, value = as_int(reply[5]), as_int(reply[6])
    label = f"rate limit {limit!r}" + (f" for {split!r}" if split else "")
    units = {"rpm": "requests/min", "tpm": "tokens/min", "tpm-too-large": "tokens/min"}
    if kind == "tpm-too-large":
        message = (
            f"{label}: this request needs more tokens than the bucket of {value} tokens/min"
            " can ever hold; it can never fit, retrying will not help"
        )
    elif kind == "concurrency":
        message = f"{label}: {value} concurrent requests are already in flight"
    else:
        message = f"{label}: over {value} {units[kind]}; retry in {retry_ms / 1000:.3f}s"
    return make(
        allowed=False,
        reason="rate-too-large" if kind == "tpm-too-large" else "rate",
        limit=limit,
        limit_kind=kind,
        split_value=split,
        retry_after_s=retry_ms / 1000 if retry_ms >= 0 else None,
        message=message,
    )


def _record_hold(reply: list[Any]) -> int:
    return int(text(reply[1]).split(FS)[1])


def usage_days(start: datetime, end: datetime) -> list[str]:
    """UTC days from ``start`` to ``end`` inclusive, as the usage keys name them."""
    days, day = [], start.astimezone(UTC).date()
    while day <= end.astimezone(UTC).date():
        days.append(day.strftime("%Y%m%d"))
        day += timedelta(days=1)
    return days
