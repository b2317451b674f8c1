"""Small readers of the public Redis layout, as an operator would use it."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def budget_state(client: Any, project: str, iid: str, ns: str = "prism") -> dict[str, int]:
    """One budget instance's stored amounts: spent, held (nUSD), start, end (s)."""
    raw = client.hget(f"{ns}:{{{project}}}:budgets", iid)
    if raw is None:
        return {"spent": 0, "held": 0, "start": 0, "end": 0}
    spent, held, start, end, _warned, _next = raw.decode().split(":")
    return {"spent": int(spent), "held": int(held), "start": int(start), "end": int(end)}


def rate_state(client: Any, project: str, iid: str, ns: str = "prism") -> dict[str, int]:
    """One rate-limit instance ("r:<id>..."): request and token levels (x60000), live holds."""
    raw = client.hget(f"{ns}:{{{project}}}:budgets", iid)
    if raw is None:
        return {"requests": 0, "tokens": 0, "holds": 0}
    rl, tl, _ts, n = raw.decode().split(":")
    return {"requests": int(rl), "tokens": int(tl), "holds": int(n)}


def held_nano(client: Any, project: str, iid: str) -> int:
    return budget_state(client, project, iid)["held"]


def spent_nano(client: Any, project: str, iid: str) -> int:
    return budget_state(client, project, iid)["spent"]


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


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s`` (a deadline
    only a hang reaches, never a window the test depends on)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
