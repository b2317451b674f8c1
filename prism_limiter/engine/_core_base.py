"""The shared state of the core: settings, held reservations, and what every operation uses
(keys, script requests, reply checks, the circuit breaker and the eviction check).

Nothing here does I/O: operations are generators that yield requests (see ``_protocol``)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from redis.crc import key_slot

from prism_limiter.engine import _validate
from prism_limiter.engine._breaker import Breaker
from prism_limiter.engine._keys import ProjectKeys
from prism_limiter.engine._listener import Listener
from prism_limiter.engine._log import logger
from prism_limiter.engine._protocol import Command, Op, Request, Script, as_int, first_key, text
from prism_limiter.engine._records import (
    Decision,
)
from prism_limiter.errors import BackendUnavailable, PrismLimiterError
from prism_limiter.policy._policy_store import PolicyStore
from prism_limiter.policy._rules import BudgetMatch, ProjectRules
from prism_limiter.pricing._pricing import ModelPrice

FailureMode = Literal["closed", "open"]
EvictingRedis = Literal["refuse", "warn"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Operational settings of a limiter (not policy): where state lives and how it is kept."""

    namespace: str = "prism"
    failure_mode: FailureMode = "closed"
    evicting_redis: EvictingRedis = "refuse"
    max_projects: int = 10_000
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    audit_retention_days: int = 400
    usage_retention_days: int = 400
    record_retention_s: int = 7 * 86400
    sweep_batch: int = 32
    sharded: bool = False  # a Redis Cluster: the circuit breaker is kept per hash slot


@dataclass(slots=True)
class Held:
    """Everything a reservation needs to settle or release without another lookup.

    The ``Decision`` of an allowed reserve is built on first read (most callers never read
    it): ``allowed`` and ``degraded`` answer the hot path without building it.
    """

    project: str
    reservation_id: str
    model: str
    tags: dict[str, str]
    est_tokens: int
    max_output_tokens: int
    price: ModelPrice | None
    budgets: list[BudgetMatch]
    made: Decision | Callable[[], Decision]  # a factory only for allowed, checked reserves
    finished: bool = field(default=False)

    @property
    def decision(self) -> Decision:
        made = self.made
        if not isinstance(made, Decision):
            made = self.made = made()
        return made

    @property
    def allowed(self) -> bool:
        return not isinstance(self.made, Decision) or self.made.allowed

    @property
    def degraded(self) -> bool:
        return isinstance(self.made, Decision) and self.made.degraded


def _config_value(reply: Any) -> str:
    """The value of a one-parameter ``CONFIG GET`` (a dict or a flat list; a cluster node's)."""
    if isinstance(reply, dict):
        values = list(reply.values())
        while values and isinstance(values[0], dict):
            values = list(values[0].values())
        return text(values[0]) if values else ""
    return text(reply[1]) if isinstance(reply, list | tuple) and len(reply) > 1 else ""


class CoreBase:
    """State shared by every operation of one limiter: settings and the policy cache."""

    """State shared by every operation of one limiter: settings and the policy cache."""

    def __init__(self, settings: Settings) -> None:
        _validate.name("namespace", settings.namespace)
        self.settings = settings
        self._keys: dict[str, ProjectKeys] = {}
        self._heads: dict[str, tuple[str | int, ...]] = {}
        self.policies = PolicyStore(
            settings.namespace,
            settings.audit_retention_days * 86400 * 1000,
            self.keys,
            settings.max_projects,
        )
        self._memory_policy_checked = False
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.listener: Listener | None = None  # an observer (metrics); see _listener

    def _emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Tell the listener; its failure is logged, never raised into the caller's call."""
        try:
            getattr(self.listener, event)(*args, **kwargs)
        except Exception as exc:
            logger.warning("prism.listener.failed", hook=event, error=repr(exc))

    # -- plumbing ---------------------------------------------------------------------------

    def keys(self, project: str) -> ProjectKeys:
        keys = self._keys.get(project)
        if keys is None:
            keys = self._keys[project] = ProjectKeys(self.settings.namespace, project)
        return keys

    def _head(self, project: str, batch: int | None = None) -> tuple[str | int, ...]:
        s = self.settings
        return (
            project,
            s.audit_retention_days * 86400 * 1000,
            s.usage_retention_days * 86400,
            s.record_retention_s * 1000,
            batch or s.sweep_batch,
        )

    def _script(
        self,
        name: str,
        project: str,
        args: list[str | int],
        batch: int | None = None,
        *,
        writes: bool = True,
    ) -> Script:
        head = self._heads.get(project) if batch is None else None
        if head is None:
            head = self._head(project, batch)
            if batch is None:
                self._heads[project] = head
        return Script(name, self.keys(project).script_keys(), [*head, *args], writes)

    @staticmethod
    def _check_reply(reply: list[Any]) -> str:
        kind = text(reply[0])
        if kind == "clock":
            raise PrismLimiterError(
                "this host's clock differs from the Redis server's by more than a day"
                f" (server time {as_int(reply[1])})"
            )
        if kind == "badargs":  # a script refused its arguments before reading anything
            raise PrismLimiterError(f"a script refused malformed arguments ({text(reply[1])})")
        if kind == "damaged":
            raise PrismLimiterError(
                "the stored record of this reservation is unreadable (edited by hand?);"
                " nothing was changed"
            )
        return kind

    def scope(self, key: str | None) -> int:
        """The circuit-breaker scope of ``key``: 0 on a single server; its hash slot on a
        cluster (-1 for keyless commands), so one failing shard trips only its own slots."""
        if not self.settings.sharded:
            return 0
        return -1 if key is None else key_slot(key.encode())

    def observe(self, error: PrismLimiterError | None, request: Request | None = None) -> None:
        """Each I/O's outcome, reported by the driver: feeds the circuit breaker."""
        scope = 0 if request is None else self.scope(first_key(request))
        if error is None:
            self.breaker.succeeded(scope)
        elif isinstance(error, BackendUnavailable):
            self.breaker.failed(scope)

    def trust_memory_policy(self) -> None:
        self._memory_policy_checked = True

    def _preflight(self, project: str | None = None) -> Op[None]:
        """Before an operation's first I/O: fail fast while the circuit breaker is open; and
        once per client, ask whether Redis may evict our keys.

        Under an ``allkeys-*`` maxmemory-policy Redis may evict a budget hash, which silently
        resets its spend to 0. Such a server is refused (``BackendUnavailable``, so the failure
        mode applies, and checked again on the next call) unless ``evicting_redis="warn"``.
        """
        self.breaker.check(self.scope(None if project is None else f"{{{project}}}"))
        if self._memory_policy_checked:
            return
        try:
            reply = yield Command(("CONFIG", "GET", "maxmemory-policy"))
        except BackendUnavailable:
            raise
        except PrismLimiterError as exc:  # CONFIG renamed or not permitted: cannot tell
            logger.warning("prism.redis.memory_policy_unknown", error=str(exc))
            self._memory_policy_checked = True
            return
        policy = _config_value(reply)
        if policy.startswith("allkeys-"):
            message = (
                f"Redis maxmemory-policy is {policy}: it may evict a budget and reset its spend"
                " to 0; set maxmemory-policy noeviction (or pass evicting_redis='warn')"
            )
            if self.settings.evicting_redis == "refuse":
                logger.error("prism.redis.evicting", maxmemory_policy=policy, action="refused")
                raise BackendUnavailable(message)
            logger.warning("prism.redis.evicting", maxmemory_policy=policy, action="warned")
        elif policy.startswith("volatile-"):
            logger.warning(
                "prism.redis.evicting",
                maxmemory_policy=policy,
                action="warned",
                hint="budgets and holds have no TTL and stay; attribution (usage:<day>) may go",
            )
        self._memory_policy_checked = True

    def rules(self, project: str) -> Op[ProjectRules]:
        """The project's compiled policy (cached; see ``_policy_store``)."""
        return (yield from self.policies.rules(project))
