"""One project's policy compiled for the hot path: model checks, budget matching, prices."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from prism_limiter.engine import _validate
from prism_limiter.engine._keys import FS, GS, LS, RS, instance_id, usage_dimensions
from prism_limiter.engine._money import usd_to_nano
from prism_limiter.errors import InvalidRequest
from prism_limiter.policy._policy import BudgetPolicy, ProjectPolicy, RateLimitPolicy
from prism_limiter.pricing._names import Resolved, key_forms, resolve
from prism_limiter.pricing._pricing import ModelPrice, from_mtok


@dataclass(frozen=True, slots=True)
class BudgetMatch:
    """A budget instance one request falls into, with the script arguments it needs."""

    budget: BudgetPolicy
    split_value: str | None
    iid: str
    cap_nano: int
    thresholds: str
    spec: str

    @property
    def label(self) -> str:
        return f"{self.budget.id}{LS}{self.split_value or ''}"

    def config(self) -> str:
        """The budget's part of the scripts' instance configs (see :func:`pack_instances`)."""
        charge = "1" if self.budget.on_expiry == "charge" else "0"
        mode = "s" if self.budget.mode == "shadow" else "e"
        cap = str(self.cap_nano)
        return FS.join((self.budget.id, cap, self.thresholds, self.spec, charge, mode))


@dataclass(frozen=True, slots=True)
class RateMatch:
    """A rate-limit instance one request falls into."""

    limit: RateLimitPolicy
    split_value: str | None
    iid: str

    def config(self) -> str:
        lim = self.limit
        config = (
            f"{lim.rpm or 0},{lim.tpm or 0},{lim.max_concurrent or 0},{round(lim.burst * 1000)}"
        )
        mode = "s" if lim.mode == "shadow" else "e"
        return FS.join((lim.id, config, mode))


def pack_instances(
    budgets: list[BudgetMatch], limits: list[RateMatch]
) -> tuple[str, str, str, str, str]:
    """The instances a request matched as the scripts take them (``instances()`` in
    ``lua/lib/instances.lua``): the configs (budgets joined by GS, RS, rate limits joined by GS;
    the same string for every split value, so the scripts keep its parse), then the budget
    instance ids (LS), their split values (GS), the rate-limit ids and split values."""
    configs = GS.join(b.config() for b in budgets) + RS + GS.join(r.config() for r in limits)
    return (
        configs,
        LS.join(b.iid for b in budgets),
        GS.join(b.split_value or "" for b in budgets),
        LS.join(r.iid for r in limits),
        GS.join(r.split_value or "" for r in limits),
    )


def _matches(forms: tuple[str, ...], globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(form, g) for g in globs for form in forms)


def _lower(globs: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(g.lower() for g in globs)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model name (with one explicit provider, or none) under one policy, resolved once."""

    name: str  # as the caller wrote it
    canonical: str  # what the hold record, the audit stream and the usage rows carry
    price: ModelPrice | None
    denial: str | None
    budgets: tuple[BudgetPolicy, ...]
    limits: tuple[RateLimitPolicy, ...]
    resolved: Resolved
    provider_source: str | None  # where the explicit provider came from (None: the name)


def _spec(budget: BudgetPolicy) -> str:
    week = "1" if budget.week_start == "monday" else "0"
    return f"{budget.period}:{week}:{budget.timezone}"


def _thresholds(cap_nano: int, warn_at: tuple[float, ...]) -> str:
    return ",".join(f"{math.ceil(cap_nano * f)}:{f:g}" for f in sorted(warn_at))


_SHAPES_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class RequestShape:
    """The parts of a reserve that depend only on the model and the tags."""

    entry: ModelEntry  # keeps the entry alive: its id, the cache key, stays its own
    budgets: list[BudgetMatch]
    tags_json: str
    dims: str  # attribution rows, joined by LS
    instances: tuple[str, ...]  # reserve.lua's instance arguments (pack_instances)


class ProjectRules:
    """Compiled once per policy version; every method is pure and cheap."""

    def __init__(
        self,
        project: str,
        policy: ProjectPolicy | None,
        version: int,
        *,
        unregistered: bool = False,
    ) -> None:
        self.project = project
        self.policy = policy
        self.version = version
        # Planned from [defaults] without a stored copy: register before an accepted reserve.
        self.unregistered = unregistered
        # Negotiated prices under every spelling of their name: (the name in lower case, price).
        self._prices: dict[str, tuple[str, ModelPrice]] = {}
        self._entries: dict[tuple[str, str | None, bool], ModelEntry] = {}
        self._shapes: dict[tuple[int, tuple[tuple[str, str], ...]], RequestShape] = {}
        self._caps: dict[str, tuple[int, str, str]] = {}
        self._allow: tuple[str, ...] = ()
        self._deny: tuple[str, ...] = ()
        self._budget_globs: tuple[tuple[BudgetPolicy, tuple[str, ...]], ...] = ()
        self._limit_globs: tuple[tuple[RateLimitPolicy, tuple[str, ...]], ...] = ()
        if policy is not None:
            for model, override in policy.prices.items():
                price = from_mtok(model, override.as_classes())
                for form in key_forms(model):
                    self._prices[form] = (model.lower(), price)
            for b in policy.budgets:
                cap = usd_to_nano(f"budget {b.id} usd", b.usd)
                self._caps[b.id] = (cap, _thresholds(cap, b.warn_at), _spec(b))
            self._allow, self._deny = _lower(policy.allow_models), _lower(policy.deny_models)
            self._budget_globs = tuple((b, _lower(b.models)) for b in policy.budgets)
            self._limit_globs = tuple((r, _lower(r.models)) for r in policy.rate_limits)

    @property
    def zones(self) -> set[str]:
        return {b.timezone for b in self.policy.budgets} if self.policy else set()

    def model(self, name: str, provider: str | None = None, *, stored: bool = False) -> ModelEntry:
        """Everything about ``name`` here: its price, canonical spelling, denial, limits.

        ``provider`` (``reserve(provider=)``) wins over the policy's ``provider``, which wins
        over the name's prefix. A ``stored`` name is a canonical spelling read back from a hold
        record: it names its provider itself, so the policy's ``provider`` is not applied.
        Resolved once per name and provider; every later call is a dict hit.
        """
        key = (name, provider, stored)
        entry = self._entries.get(key)
        if entry is None:  # threads that race here all get the entry stored first
            entry = self._entries.setdefault(key, self._entry(name, provider, stored))
        return entry

    def _entry(self, name: str, provider: str | None, stored: bool) -> ModelEntry:
        pol = self.policy
        source: str | None = None
        if provider is not None:
            source = "provider="
        elif not stored and pol is not None and pol.provider is not None:
            provider, source = pol.provider, "the policy's provider"
        res = resolve(name, provider)
        negotiated = next((self._prices[f] for f in res.forms if f in self._prices), None)
        canonical = res.canonical or (negotiated[0] if negotiated else res.name)
        forms = res.forms if canonical in res.forms else (*res.forms, canonical)
        return ModelEntry(
            name=name,
            canonical=canonical,
            price=negotiated[1] if negotiated else res.price,
            denial=self._denial(forms),
            budgets=tuple(b for b, g in self._budget_globs if not g or _matches(forms, g)),
            limits=tuple(r for r, g in self._limit_globs if not g or _matches(forms, g)),
            resolved=res,
            provider_source=source,
        )

    def _denial(self, forms: tuple[str, ...]) -> str | None:
        if self.policy is None:
            return "no-policy"
        if _matches(forms, self._deny):
            return "model-denied"
        if not _matches(forms, self._allow):
            return "model-not-allowed"
        return None

    def budgets(self, entry: ModelEntry, tags: dict[str, str]) -> list[BudgetMatch]:
        """Every budget instance a request for this model with these tags counts against."""
        out = []
        for b in entry.budgets:
            if any(tags.get(k) != v for k, v in b.where.items()):
                continue
            split = tags.get(b.split_by) if b.split_by else None
            cap, thresholds, spec = self._caps[b.id]
            out.append(BudgetMatch(b, split, instance_id(b.id, split), cap, thresholds, spec))
        return out

    def rate_limits(self, entry: ModelEntry, tags: dict[str, str]) -> list[RateMatch]:
        """Every rate-limit instance a request for this model with these tags counts against."""
        out = []
        for r in entry.limits:
            if any(tags.get(k) != v for k, v in r.where.items()):
                continue
            split = tags.get(r.split_by) if r.split_by else None
            out.append(RateMatch(r, split, "r:" + instance_id(r.id, split)))
        return out

    def shape(self, entry: ModelEntry, tags: dict[str, str]) -> RequestShape:
        """What a request for this model with these tags needs, built once per tag set.

        Requests repeat the same few models and tag sets: the matched instances, the tags JSON,
        the attribution rows and the script arguments of the instances are kept (at most
        ``_SHAPES_KEPT`` of them; then the cache starts again).
        """
        key = (id(entry), tuple(tags.items()))
        shape = self._shapes.get(key)
        # A shape holds its entry alive, so while it is cached no other object can take that
        # id; without it, an entry a racing model() call built and dropped left its shape to
        # whatever entry was built in its memory next.
        if shape is None or shape.entry is not entry:
            if len(self._shapes) >= _SHAPES_KEPT:
                self._shapes.clear()
            budgets = self.budgets(entry, tags)
            limits = self.rate_limits(entry, tags)
            shape = self._shapes[key] = RequestShape(
                entry=entry,
                budgets=budgets,
                tags_json=json.dumps(tags, separators=(",", ":"), ensure_ascii=False),
                dims=LS.join(usage_dimensions(entry.canonical, tags)),
                instances=pack_instances(budgets, limits),
            )
        return shape

    def cap_and_spec(self, budget: str) -> tuple[int, str]:
        """A budget's cap (nUSD) and period spec as the scripts take them."""
        cap, _, spec = self._caps[budget]
        return cap, spec

    def budget_instance(self, budget: str, split_value: str | None) -> tuple[str, str]:
        """Instance id and label of one budget instance named by a caller (overrides)."""
        match = (
            next((b for b in self.policy.budgets if b.id == budget), None) if self.policy else None
        )
        if match is None:
            raise InvalidRequest(f"project {self.project!r} has no budget {budget!r}")
        if (split_value is None) != (match.split_by is None):
            raise InvalidRequest(
                f"budget {budget!r} is split by {match.split_by!r}: pass its split_value"
                if match.split_by
                else f"budget {budget!r} is not split; pass no split_value"
            )
        if split_value is not None:
            _validate.tag_value(match.split_by or "split_value", split_value)
        return instance_id(budget, split_value), f"{budget}{LS}{split_value or ''}"
