"""Reading what the library stored, by the public Redis layout (see the README)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from prism_limiter._keys import FS, LS, global_policy_key, unescape
from prism_limiter._money import nano_to_usd
from prism_limiter._policy import Policy
from prism_limiter.cli._common import call, text


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """The whole effective document ``<ns>:policy`` (every apply merged in)."""

    version: int
    policy: Policy
    actor: str | None = None
    applied_at: datetime | None = None


def stored_policy(client: Any, namespace: str) -> StoredPolicy:
    raw = call(client, "HMGET", global_policy_key(namespace), "v", "doc", "actor", "ts_ms")
    version, doc, actor, ts_ms = raw
    if version is None or doc is None:
        return StoredPolicy(0, Policy())
    policy = msgspec.json.decode(doc, type=Policy)
    when = datetime.fromtimestamp(int(ts_ms) / 1000, UTC) if ts_ms is not None else None
    return StoredPolicy(int(version), policy, text(actor) if actor else None, when)


@dataclass(frozen=True, slots=True)
class StoredOverride:
    """An override as the budgets hash holds it: ``<iid>|o`` = ``extra nUSD:until ms``; the
    instance's budget and split value come from its config ``<iid>|c``."""

    budget: str
    split_value: str | None
    extra_usd: float
    until_ms: int
    live: bool = field(default=True)

    @property
    def until(self) -> datetime:
        return datetime.fromtimestamp(self.until_ms / 1000, UTC)


def overrides(client: Any, namespace: str, project: str) -> list[StoredOverride]:
    """Every override stored for ``project``, live or ended (``live`` on the server clock)."""
    key = f"{namespace}:{{{project}}}:budgets"
    flat = call(client, "HGETALL", key)
    fields = _as_dict(flat)
    now_s, now_us = call(client, "TIME")
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    out = []
    for name, value in fields.items():
        if not name.endswith("|o"):
            continue
        iid = name[:-2]
        extra, _, until = value.partition(":")
        if not (extra.isdigit() and until.isdigit()):
            continue  # damaged: the scripts ignore it too
        config = fields.get(iid + "|c", "").split(FS)
        if len(config) == 4:
            budget, _, split = config[3].partition(LS)
        else:  # no config: the instance id itself ("<id>" or "<id>=<escaped value>")
            budget, _, escaped = iid.partition("=")
            split = unescape(escaped)
        out.append(
            StoredOverride(
                budget=budget,
                split_value=split or None,
                extra_usd=nano_to_usd(int(extra)),
                until_ms=int(until),
                live=int(until) > now_ms,
            )
        )
    return sorted(out, key=lambda o: (o.budget, o.split_value or ""))


def _as_dict(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return {text(k): text(v) for k, v in flat.items()}
    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
