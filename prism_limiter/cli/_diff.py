"""What applying a policy document would change, project by project (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from prism_limiter.policy._policy import BudgetPolicy, Policy, ProjectPolicy, RateLimitPolicy

Kind = Literal["added", "removed", "changed"]
DEFAULTS = "[defaults]"
_LISTS = ("allow_models", "deny_models")
_SETTINGS = (
    "default_max_output_tokens",
    "default_max_cache_write_tokens",
    "on_unknown_price",
    "hold_ttl_s",
    "provider",
)
_EMPTY = ProjectPolicy()


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: in ``scope`` (a project or ``[defaults]``), ``item`` (or its ``field``)
    was added, removed or changed from ``before`` to ``after``."""

    scope: str
    kind: Kind
    item: str
    before: Any = None
    after: Any = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"scope": self.scope, "kind": self.kind, "item": self.item}
        if self.field is not None:
            out["field"] = self.field
        if self.before is not None:
            out["before"] = self.before
        if self.after is not None:
            out["after"] = self.after
        return out


def diff(stored: Policy, new: Policy, *, prune: bool = False) -> list[Change]:
    """What ``apply_policy(new, prune=prune)`` changes in the ``stored`` document.

    Without ``prune`` only the projects ``new`` names (and its ``[defaults]``, when it has
    them) are replaced; with it, the stored projects ``new`` does not list are removed and
    ``[defaults]`` becomes whatever ``new`` says (possibly none).
    """
    changes: list[Change] = []
    for name in sorted(new.projects):
        before = stored.projects.get(name)
        if before is None:
            changes.append(Change(name, "added", "project"))
        changes += project_diff(name, before, new.projects[name])
    if prune:
        for name in sorted(set(stored.projects) - set(new.projects)):
            fallback = "[defaults]" if new.defaults is not None else "no policy"
            changes.append(Change(name, "removed", "project", after=f"falls back to {fallback}"))
    if new.defaults is not None or prune:
        if new.defaults is None:
            if stored.defaults is not None:
                changes.append(Change(DEFAULTS, "removed", "defaults"))
        else:
            if stored.defaults is None:
                changes.append(Change(DEFAULTS, "added", "defaults"))
            changes += project_diff(DEFAULTS, stored.defaults, new.defaults)
    return changes


def project_diff(scope: str, a: ProjectPolicy | None, b: ProjectPolicy) -> list[Change]:
    """Item by item: the model lists, settings, budgets (caps included), rate limits, prices.
    A project that was not there counts as an empty one, so an added project lists what it
    brings (settings only where they differ from the defaults)."""
    old = a or _EMPTY
    out: list[Change] = []
    for field in _LISTS:
        before, after = set(getattr(old, field)), set(getattr(b, field))
        out += [Change(scope, "added", field, after=g) for g in sorted(after - before)]
        out += [Change(scope, "removed", field, before=g) for g in sorted(before - after)]
    for field in _SETTINGS:
        if getattr(old, field) != getattr(b, field):
            out.append(Change(scope, "changed", field, getattr(old, field), getattr(b, field)))
    out += _by_id(scope, "budget", _ids(old.budgets), _ids(b.budgets))
    out += _by_id(scope, "rate limit", _ids(old.rate_limits), _ids(b.rate_limits))
    out += _by_id(scope, "price", dict(old.prices), dict(b.prices))
    return out


def _ids(items: tuple[BudgetPolicy, ...] | tuple[RateLimitPolicy, ...]) -> dict[str, Any]:
    return {item.id: item for item in items}


def _by_id(scope: str, what: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(Change(scope, "added", f"{what} {key}", after=summary(new[key])))
        elif key not in new:
            out.append(Change(scope, "removed", f"{what} {key}", before=summary(old[key])))
        else:
            before, after = _fields(old[key]), _fields(new[key])
            for name in before:
                if before[name] != after[name]:
                    item = f"{what} {key}"
                    out.append(Change(scope, "changed", item, before[name], after[name], name))
    return out


def _fields(item: msgspec.Struct) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(item)
    return {f: data.get(f) for f in item.__struct_fields__ if f != "id"}


def summary(item: object) -> str:
    """One line for a budget, a rate limit or a price."""
    if isinstance(item, BudgetPolicy):
        text = f"${item.usd:,g} per {item.period} ({item.timezone})"
        if item.split_by:
            text += f", split by {item.split_by}"
        if item.where:
            text += ", where " + ", ".join(f"{k}={v}" for k, v in sorted(item.where.items()))
        if item.models:
            text += ", models " + ", ".join(item.models)
        return text
    if isinstance(item, RateLimitPolicy):
        parts = [
            f"{value} {label}"
            for value, label in (
                (item.rpm, "rpm"),
                (item.tpm, "tpm"),
                (item.max_concurrent, "concurrent"),
            )
            if value is not None
        ]
        if item.models:
            parts.append("models " + ", ".join(item.models))
        if item.split_by:
            parts.append(f"split by {item.split_by}")
        return ", ".join(parts)
    if isinstance(item, msgspec.Struct):
        data = msgspec.to_builtins(item)
        return ", ".join(f"{k} {v:g}" for k, v in data.items() if v is not None)
    return str(item)
