"""The Lua scripts: one source, loaded as a Redis Function library or sent by EVALSHA.

Each ``lua/<name>.lua`` defines ``local function <name>(keys, argv)``; its second header line
names the shared libraries it needs (``-- needs: common period``). On Redis >= 7 everything is
loaded once as the Function library ``prism_<digest>`` and called with ``FCALL``: the helpers
are defined at load, not on every call. Redis 6.2, servers that refuse ``FUNCTION LOAD`` and
the embedded ``memory://`` server run the same code by ``EVALSHA``, with a footer that calls
the function (redis-py's ``register_script`` reloads it on NOSCRIPT). The digest changes with
the code, so workers of two releases can share a server during a rolling deploy.

With ``durable_replicas`` each write goes through ``_durable`` instead: the script (or command),
a barrier and ``WAIT`` in one pipeline to the primary of its slot; the runners below only
execute the steps it plans.

A server without the library (restarted without persistence, a new primary, ``FUNCTION
FLUSH``) answers "Function not found" before running anything; the library is then loaded
again (on every primary of a cluster) and the call repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Generator
from importlib import resources
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import PipelineCommand

from prism_limiter.engine import _durable
from prism_limiter.engine._durable import Batch, Durability, Remap, Step, function_missing
from prism_limiter.engine._log import logger
from prism_limiter.engine._protocol import Request, Script

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
_LIBS = ("common", "audit", "period", "rate", "overrides", "instances", "state", "upkeep")


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


def _refused(exc: Exception) -> bool:
    """FUNCTION LOAD refused (no such command, or not permitted): use EVALSHA from now on."""
    logger.warning("prism.scripts.eval_fallback", error=str(exc))
    return False


def _embedded(client: Any) -> bool:
    return type(client).__module__.startswith("fakeredis")


class _Runner:
    """What both runners share: the client, how scripts are sent now, and the durable plan."""

    def __init__(self, client: Any, durability: Durability | None = None) -> None:
        self._client = client
        self._eval = {name: client.register_script(source(name)) for name in NAMES}
        self._functions: bool | None = False if _embedded(client) else None
        self.durability = durability

    @property
    def functions(self) -> bool | None:
        """True once the Function library is loaded, False when EVALSHA is used, None before."""
        return self._functions

    def command(self, request: Request) -> tuple[str | int, ...]:
        """``request`` as one command, sent the way scripts go now (FCALL or EVALSHA)."""
        if not isinstance(request, Script):
            return request.args
        n = len(request.keys)
        if self._functions is False:
            return ("EVALSHA", self._eval[request.name].sha, n, *request.keys, *request.args)
        return ("FCALL", function_name(request.name), n, *request.keys, *request.args)

    def _plan(self, request: Request) -> Generator[Step, Any, Any]:
        assert self.durability is not None
        return _durable.write(request, self, self.durability)


class Scripts(_Runner):
    """Runs the scripts on a sync client (``redis.Redis`` or ``RedisCluster``)."""

    def __call__(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        if self._functions is not False:
            try:
                return self._client.fcall(function_name(name), len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if not function_missing(exc):
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

    def durable(self, request: Request) -> Any:
        """Run a write, then WAIT for its replicas (see ``_durable``)."""
        plan = self._plan(request)
        try:
            step = next(plan)
            while True:
                try:
                    result = self._execute(step)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
        except StopIteration as stop:
            return stop.value

    def _execute(self, step: Step) -> Any:
        if isinstance(step, Batch):
            target = self._client
            if self.durability is not None and self.durability.sharded:
                target = target.get_redis_connection(target.get_node_from_key(step.key))
            pipe = target.pipeline(transaction=False)
            for command in step.commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=False)
        if isinstance(step, Remap):
            time.sleep(step.pause_s)
            with contextlib.suppress(redis.RedisError):  # the next attempt tells if it answers
                self._client.nodes_manager.initialize()
            return None
        if step.name is None:
            self._load()
        else:
            self._client.script_load(source(step.name))
        return None


class AsyncScripts(_Runner):
    """Runs the scripts on an asyncio client; the same steps as :class:`Scripts`, awaited."""

    async def __call__(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        if self._functions is not False:
            try:
                return await self._client.fcall(function_name(name), len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if not function_missing(exc):
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

    async def durable(self, request: Request) -> Any:
        """Run a write, then WAIT for its replicas (see ``_durable``)."""
        plan = self._plan(request)
        try:
            step = next(plan)
            while True:
                try:
                    result = await self._execute(step)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
        except StopIteration as stop:
            return stop.value

    async def _execute(self, step: Step) -> Any:
        if isinstance(step, Batch):
            if self.durability is not None and self.durability.sharded:
                # One batch on one connection of the slot's primary, as ClusterPipeline does.
                node = self._client.get_node_from_key(step.key)
                commands = [PipelineCommand(i, *c) for i, c in enumerate(step.commands)]
                await node.execute_pipeline(commands)
                return [c.result for c in commands]
            pipe = self._client.pipeline(transaction=False)
            for command in step.commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
        if isinstance(step, Remap):
            await asyncio.sleep(step.pause_s)
            with contextlib.suppress(redis.RedisError):
                await self._client.nodes_manager.initialize()
            return None
        if step.name is None:
            await self._load()
        else:
            await self._client.script_load(source(step.name))
        return None
