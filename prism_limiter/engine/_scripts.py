"""The Lua scripts: one source, loaded as a Redis Function library or sent by EVALSHA.

Each ``lua/<name>.lua`` defines ``local function <name>(keys, argv)``; its second header line
names the shared libraries it needs (``-- needs: common period``). On Redis >= 7 everything is
loaded once as the Function library ``prism_<digest>`` and called with ``FCALL``: the helpers
are defined at load, not on every call. Redis 6.2, servers that refuse ``FUNCTION LOAD`` and
the embedded ``memory://`` server run the same code by ``EVALSHA``, with a footer that calls
the function (redis-py's ``register_script`` reloads it on NOSCRIPT). The digest changes with
the code, so workers of two releases can share a server during a rolling deploy.

A server without the library (restarted without persistence, a new primary, ``FUNCTION
FLUSH``) answers "Function not found" before running anything; the library is then loaded
again (on every primary of a cluster) and the call repeated.
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from prism_limiter.engine._log import logger

NAMES = (
    "apply_policy",
    "bump_policy",
    "override",
    "release",
    "reserve",
    "settle",
    "status",
    "sweep",
)
_NEEDS = re.compile(r"^-- needs: (.*)$", re.MULTILINE)
_LIBS = ("common", "audit", "period", "rate", "overrides", "state", "upkeep")


def lua_dir() -> Path:
    """``prism_limiter/lua`` in a wheel, else the top-level ``lua/`` of a source checkout."""
    packaged = Path(str(resources.files("prism_limiter"))) / "lua"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "lua"


def _read(relative: str) -> str:
    return (lua_dir() / relative).read_text(encoding="utf-8")


@functools.cache
def source(name: str) -> str:
    """One script for EVALSHA: its libraries, its function, and a call of it."""
    body = _read(f"{name}.lua")
    needs = _NEEDS.search(body)
    libs = [_read(f"lib/{lib}.lua") for lib in (needs.group(1).split() if needs else [])]
    head = "local EVAL_KEYS, EVAL_ARGV = KEYS, ARGV\n"
    return "\n".join([head, *libs, body, f"return {name}(EVAL_KEYS, EVAL_ARGV)\n"])


@functools.cache
def library() -> tuple[str, str]:
    """(library name, code) of the Function library holding every script."""
    parts = [_read(f"lib/{lib}.lua") for lib in _LIBS] + [_read(f"{n}.lua") for n in NAMES]
    digest = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]
    lib = f"prism_{digest}"
    registrations = [f"redis.register_function('{lib}_{n}', {n})" for n in NAMES]
    return lib, "\n".join([f"#!lua name={lib}", *parts, *registrations, ""])


def function_name(name: str) -> str:
    return f"{library()[0]}_{name}"


def _missing(exc: redis.ResponseError) -> bool:
    """FCALL found no such function (or no FCALL at all): nothing ran."""
    text = str(exc)
    return "Function not found" in text or "unknown command" in text.lower()


def _refused(exc: Exception) -> bool:
    """FUNCTION LOAD refused (no such command, or not permitted): use EVALSHA from now on."""
    logger.warning("prism.scripts.eval_fallback", error=str(exc))
    return False


def _embedded(client: Any) -> bool:
    return type(client).__module__.startswith("fakeredis")


class Scripts:
    """Runs the scripts on a sync client (``redis.Redis`` or ``RedisCluster``)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._eval = {name: client.register_script(source(name)) for name in NAMES}
        self._functions: bool | None = False if _embedded(client) else None

    def __call__(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        if self._functions is not False:
            try:
                return self._client.fcall(function_name(name), len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if not _missing(exc):
                    raise
            self._load()
            if self._functions:
                return self._client.fcall(function_name(name), len(keys), *keys, *args)
        return self._eval[name](keys=keys, args=args)

    def _load(self) -> None:
        try:
            self._client.function_load(library()[1], replace=True)
            self._functions = True
        except redis.ResponseError as exc:  # no FUNCTION command, or not permitted
            self._functions = _refused(exc)


class AsyncScripts:
    """Runs the scripts on an asyncio client; the same steps as :class:`Scripts`, awaited."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._eval = {name: client.register_script(source(name)) for name in NAMES}
        self._functions: bool | None = False if _embedded(client) else None

    async def __call__(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        if self._functions is not False:
            try:
                return await self._client.fcall(function_name(name), len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if not _missing(exc):
                    raise
            await self._load()
            if self._functions:
                return await self._client.fcall(function_name(name), len(keys), *keys, *args)
        return await self._eval[name](keys=keys, args=args)

    async def _load(self) -> None:
        try:
            await self._client.function_load(library()[1], replace=True)
            self._functions = True
        except redis.ResponseError as exc:
            self._functions = _refused(exc)
