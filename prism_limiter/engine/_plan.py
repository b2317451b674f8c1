"""Script arguments for a request: validated once, planned against a compiled policy (pure)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from prism_limiter.engine import _validate
from prism_limiter.engine._keys import LS, usage_dimensions
from prism_limiter.errors import InvalidRequest
from prism_limiter.policy._rules import BudgetMatch, ModelEntry, ProjectRules, pack_instances
from prism_limiter.pricing._pricing import ModelPrice, provider_problem

DEFAULT_HOLD_TTL_S = 600.0
_NO_INSTANCES = pack_instances([], [])


@dataclass(frozen=True, slots=True)
class Request:
    """A reserve's arguments, validated."""

    project: str
    model: str
    est_tokens: int
    max_output_tokens: int | None
    max_cache_write_tokens: int | None
    tags: dict[str, str]
    ttl_s: float | None
    reservation_id: str
    provider: str | None


def request(
    project: object,
    model: object,
    est_tokens: object,
    *,
    max_output_tokens: object,
    max_cache_write_tokens: object = None,
    tags: object,
    ttl_s: object,
    reservation_id: object,
    provider: object,
) -> Request:
    """Validate everything before any I/O; bad input raises ``InvalidRequest``."""
    return Request(
        project=_validate.name("project", project),
        model=_validate.model(model),
        est_tokens=_validate.tokens("est_tokens", est_tokens),
        max_output_tokens=None
        if max_output_tokens is None
        else _validate.tokens("max_output_tokens", max_output_tokens),
        max_cache_write_tokens=None
        if max_cache_write_tokens is None
        else _validate.tokens("max_cache_write_tokens", max_cache_write_tokens),
        tags=_validate.tags(tags),
        ttl_s=None if ttl_s is None else _validate.seconds("ttl_s", ttl_s),
        reservation_id=new_reservation_id()
        if reservation_id is None
        else _validate.reservation_id(reservation_id),
        provider=None if provider is None else _provider(provider),
    )


def new_reservation_id() -> str:
    """A fresh random id (128 bits, hex)."""
    return os.urandom(16).hex()


def _provider(value: object) -> str:
    problem = provider_problem(value)
    if problem is not None or not isinstance(value, str):
        raise InvalidRequest(problem)
    return value


def tags_json(tags: dict[str, str]) -> str:
    return json.dumps(tags, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ReservePlan:
    """What a reserve sends, and what its reservation keeps for settling without a lookup."""

    out_tokens: int
    entry: ModelEntry
    price: ModelPrice | None
    budgets: list[BudgetMatch]
    args: list[str | int]
    denial: str | None


def plan_reserve(rules: ProjectRules, req: Request) -> ReservePlan:
    """ARGV of reserve.lua (after the common head) for ``req`` under ``rules``."""
    pol = rules.policy
    default_out = pol.default_max_output_tokens if pol else 0
    out_tokens = default_out if req.max_output_tokens is None else req.max_output_tokens
    entry = rules.model(req.model, req.provider)
    denial = entry.denial
    price = entry.price if denial is None else None
    flags = ""
    if denial is None and price is None:
        if pol is not None and pol.on_unknown_price == "deny":
            raise InvalidRequest(unknown_price_message(rules.project, entry))
        flags = "u"  # allowed at cost 0, audited price.unknown
    writes = req.max_cache_write_tokens
    if writes is None and pol is not None:
        writes = pol.default_max_cache_write_tokens
    hold = price.hold_nano(req.est_tokens, out_tokens, writes) if price else 0
    ttl_s = req.ttl_s or (pol.hold_ttl_s if pol else DEFAULT_HOLD_TTL_S)
    if denial is None:
        shape = rules.shape(entry, req.tags)
        budgets, tags, dims, instances = shape.budgets, shape.tags_json, shape.dims, shape.instances
    else:  # nothing is checked or held: only the audit entry needs the tags
        budgets, tags, dims, instances = [], tags_json(req.tags), "", _NO_INSTANCES
    args: list[str | int] = [
        str(rules.version),
        req.reservation_id,
        denial or "",
        hold,
        int(ttl_s * 1000),
        entry.canonical,
        tags,
        dims,
        req.est_tokens,
        out_tokens,
        flags,
        *instances,
    ]
    return ReservePlan(out_tokens, entry, price, budgets, args, denial)


def unknown_price_message(project: str, entry: ModelEntry) -> str:
    """Why ``entry`` has no price, what was looked up where, and the four ways to fix it."""
    res = entry.resolved
    looked = []
    for model, provider in res.tried:
        if provider is None:
            looked.append(f"{model!r} at any provider")
        else:
            source = entry.provider_source if res.provider else "the name's prefix"
            looked.append(f"{model!r} at provider {provider!r} (from {source})")
    clash = ""
    which = "a genai-prices provider id such as 'openai', 'azure' or 'openrouter'"
    if res.provider is not None and res.prefix not in (None, res.provider):
        clash = (
            f"; the name's prefix names provider {res.prefix!r}, which"
            f" {entry.provider_source} overrides"
        )
        which = f"{res.prefix!r}, as the prefix says"
    return (
        f"no price is known for model {entry.name!r}: genai-prices has no"
        f" {', nor '.join(looked)}{clash}. To price it, pass provider= to reserve() ({which}),"
        ' set the policy\'s provider (provider = "..." in'
        f" [projects.{project}]), add a negotiated price [projects.{project}.prices."
        f'"{entry.name}"] with input_mtok and output_mtok, or set on_unknown_price = "allow"'
        " (booked at cost 0, audited price.unknown)"
    )


def settle_fallback(
    model: str, tags: dict[str, str], budgets: list[BudgetMatch]
) -> list[str | int]:
    """ARGV[12..] of settle.lua: how to book an id the project does not know."""
    dims = LS.join(usage_dimensions(model, tags))
    return [model, tags_json(tags), dims, *pack_instances(budgets, [])]
