"""One project's policy compiled for the hot path: model checks, budget matching, prices."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from prism_limiter import _validate
from prism_limiter._keys import LS, instance_id
from prism_limiter._money import usd_to_nano
from prism_limiter._policy import BudgetPolicy, ProjectPolicy, RateLimitPolicy
from prism_limiter._pricing import PRICES, ModelPrice, from_mtok
from prism_limiter.errors import InvalidRequest


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

    def script_args(self) -> list[str | int]:
        charge = "1" if self.budget.on_expiry == "charge" else "0"
        return [self.iid, self.label, self.cap_nano, self.thresholds, self.spec, charge]


@dataclass(frozen=True, slots=True)
class RateMatch:
    """A rate-limit instance one request falls into."""

    limit: RateLimitPolicy
    split_value: str | None
    iid: str

    def script_args(self) -> list[str | int]:
        lim = self.limit
        config = (
            f"{lim.rpm or 0},{lim.tpm or 0},{lim.max_concurrent or 0},{round(lim.burst * 1000)}"
        )
        return [self.iid, f"{lim.id}{LS}{self.split_value or ''}", config]


def _matches(model: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(model, g) for g in globs)


def _spec(budget: BudgetPolicy) -> str:
    week = "1" if budget.week_start == "monday" else "0"
    return f"{budget.period}:{week}:{budget.timezone}"


def _thresholds(cap_nano: int, warn_at: tuple[float, ...]) -> str:
    return ",".join(f"{math.ceil(cap_nano * f)}:{f:g}" for f in sorted(warn_at))


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
        self._prices: dict[str, ModelPrice] = {}
        self._by_model: dict[
            str, tuple[str | None, tuple[BudgetPolicy, ...], tuple[RateLimitPolicy, ...]]
        ] = {}
        self._caps: dict[str, tuple[int, str, str]] = {}
        if policy is not None:
            for model, override in policy.prices.items():
                self._prices[model] = from_mtok(model, override.as_classes())
            for b in policy.budgets:
                cap = usd_to_nano(f"budget {b.id} usd", b.usd)
                self._caps[b.id] = (cap, _thresholds(cap, b.warn_at), _spec(b))

    @property
    def zones(self) -> set[str]:
        return {b.timezone for b in self.policy.budgets} if self.policy else set()

    def _model_entry(
        self, model: str
    ) -> tuple[str | None, tuple[BudgetPolicy, ...], tuple[RateLimitPolicy, ...]]:
        entry = self._by_model.get(model)
        if entry is None:
            pol = self.policy
            budgets = pol.budgets if pol else ()
            limits = pol.rate_limits if pol else ()
            entry = (
                self._denial(model),
                tuple(b for b in budgets if not b.models or _matches(model, b.models)),
                tuple(r for r in limits if not r.models or _matches(model, r.models)),
            )
            self._by_model[model] = entry
        return entry

    def _denial(self, model: str) -> str | None:
        if self.policy is None:
            return "no-policy"
        if _matches(model, self.policy.deny_models):
            return "model-denied"
        if not _matches(model, self.policy.allow_models):
            return "model-not-allowed"
        return None

    def denial(self, model: str) -> str | None:
        """Why ``model`` may not be used here (deny wins over allow), or None."""
        return self._model_entry(model)[0]

    def budgets(self, model: str, tags: dict[str, str]) -> list[BudgetMatch]:
        """Every budget instance a request with this model and these tags counts against."""
        out = []
        for b in self._model_entry(model)[1]:
            if any(tags.get(k) != v for k, v in b.where.items()):
                continue
            split = tags.get(b.split_by) if b.split_by else None
            cap, thresholds, spec = self._caps[b.id]
            out.append(BudgetMatch(b, split, instance_id(b.id, split), cap, thresholds, spec))
        return out

    def rate_limits(self, model: str, tags: dict[str, str]) -> list[RateMatch]:
        """Every rate-limit instance a request with this model and these tags counts against."""
        out = []
        for r in self._model_entry(model)[2]:
            if any(tags.get(k) != v for k, v in r.where.items()):
                continue
            split = tags.get(r.split_by) if r.split_by else None
            out.append(RateMatch(r, split, "r:" + instance_id(r.id, split)))
        return out

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

    def price(self, model: str, provider: str | None) -> ModelPrice | None:
        override = self._prices.get(model)
        if override is not None:
            return override
        return PRICES.get(model, provider or (self.policy.provider if self.policy else None))
