"""Small readers of the public Redis layout, as an operator would use it."""

from __future__ import annotations

from typing import Any


def audit(
    client: Any, project: str, event: str | None = None, ns: str = "prism"
) -> list[dict[str, str]]:
    entries = client.xrange(f"{ns}:{{{project}}}:audit")
    out = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    return [e for e in out if event is None or e["event"] == event]


def budget_fields(client: Any, project: str, ns: str = "prism") -> dict[str, str]:
    raw = client.hgetall(f"{ns}:{{{project}}}:budgets")
    return {k.decode(): v.decode() for k, v in raw.items()}


def held_nano(client: Any, project: str, iid: str) -> int:
    return int(budget_fields(client, project).get(f"{iid}|h", 0))


def spent_nano(client: Any, project: str, iid: str) -> int:
    return int(budget_fields(client, project).get(f"{iid}|s", 0))


def keyspace(client: Any) -> dict[bytes, Any]:
    """Every key with its full value, to prove an operation changed nothing."""
    out: dict[bytes, Any] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key).decode()
        if kind == "string":
            out[key] = client.get(key)
        elif kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = client.smembers(key)
        elif kind == "stream":
            out[key] = client.xrange(key)
        else:
            out[key] = kind
    return out
