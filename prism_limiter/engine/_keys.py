"""Redis key and hash-field names.

Every key of a project is ``<namespace>:{<project>}:<name>``; the braces are the Redis Cluster hash
tag, so every key one script touches lives in one slot. Projects are validated names and cannot
hold a brace. Tag values, which may hold anything printable, only ever reach hash *fields*, and only
through :func:`escape`, which is injective and leaves none of the separators ``| = & { }``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

# Fields are "<part>|<suffix>"; parts are "<name>=<escaped value>" joined by "&".
_SAFE = "-_.~:@/"
# Inside values the scripts split: FS between the fields of a hold record, LS between list items;
# in the packed instances argument, GS between instances and RS before the rate limits.
FS = "\x1f"
LS = "\x1e"
GS = "\x1d"
RS = "\x1c"


def escape(value: str) -> str:
    """Percent-encode everything outside a small safe set (injective; no ``| = & { } %`` left)."""
    return quote(value, safe=_SAFE)


def unescape(value: str) -> str:
    return unquote(value)


def instance_id(limit_id: str, split_value: str | None) -> str:
    """The field prefix of one budget (or rate-limit) instance."""
    return limit_id if split_value is None else f"{limit_id}={escape(split_value)}"


def usage_dimensions(model: str, tags: dict[str, str]) -> list[str]:
    """Attribution rows one request adds to: the project total, its model, and each tag value."""
    dims = ["total", f"model={escape(model)}"]
    dims.extend(f"tag:{key}={escape(value)}" for key, value in tags.items())
    return dims


@dataclass(frozen=True, slots=True)
class ProjectKeys:
    """All keys of one project, in the fixed order every script receives them."""

    namespace: str
    project: str
    _by_day: dict[int, list[str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{{{self.project}}}:"

    @property
    def policy(self) -> str:
        return self.prefix + "policy"

    @property
    def audit(self) -> str:
        return self.prefix + "audit"

    @property
    def audit_head(self) -> str:
        """The audit stream's last seq and chain, and its open flood windows (a hash)."""
        return self.prefix + "audit:head"

    @property
    def overrides(self) -> str:
        return self.prefix + "overrides"

    def usage(self, day: str) -> str:
        return f"{self.prefix}usage:{day}"

    def script_keys(self, now: datetime | None = None) -> list[str]:
        """KEYS for every script: the state keys, three candidate usage days, the audit head
        and the override records.

        The script picks the usage day from the server clock; the client only offers yesterday,
        today and tomorrow by its own clock, so a client clock a day off is detected, not trusted.
        """
        if now is None:
            day = int(time.time() // 86400)
            cached = self._by_day.get(day)
            if cached is None:
                self._by_day.clear()
                cached = self._by_day[day] = self.script_keys(
                    datetime.fromtimestamp(day * 86400, UTC)
                )
            return cached
        days = [(now + timedelta(days=d)).strftime("%Y%m%d") for d in (-1, 0, 1)]
        p = self.prefix
        return [
            p + "policy",
            p + "budgets",
            p + "bidx",
            p + "holds",
            p + "leases",
            p + "done",
            p + "audit",
            *(self.usage(day) for day in days),
            p + "audit:head",
            p + "overrides",
        ]


def global_policy_key(namespace: str) -> str:
    return f"{namespace}:policy"


def projects_key(namespace: str) -> str:
    return f"{namespace}:projects"
