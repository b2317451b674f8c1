"""Reading what the library stored, by the public Redis layout (see the README)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from prism_limiter.cli._common import call, text
from prism_limiter.engine._keys import global_policy_key
from prism_limiter.policy._policy import Policy


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


def _as_dict(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return {text(k): text(v) for k, v in flat.items()}
    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
