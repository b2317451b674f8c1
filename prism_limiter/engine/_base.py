"""What ``Limiter`` and ``AsyncLimiter`` share besides the core: construction and shaping."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from prism_limiter.engine import _validate
from prism_limiter.engine._core import EvictingRedis, FailureMode, Held, LimiterCore, Settings
from prism_limiter.engine._durable import Durability
from prism_limiter.engine._log import logger
from prism_limiter.engine._records import Decision
from prism_limiter.errors import (
    BudgetExceeded,
    InvalidRequest,
    LimitExceeded,
    ModelNotAllowed,
    RateLimited,
)
from prism_limiter.pricing import _usage
from prism_limiter.pricing._pricing import TokenUsage

DEFAULT_SOCKET_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 2
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_DURABLE_TIMEOUT_S = 0.5
MAX_DURABLE_REPLICAS = 100


class BaseLimiter:
    """Holds the client, its bound scripts and the core; subclasses add the I/O."""

    _script_runner: Any  # _scripts.Scripts or _scripts.AsyncScripts

    def __init__(
        self,
        client: Any,
        namespace: str = "prism",
        *,
        failure_mode: FailureMode = "closed",
        audit_retention_days: int = 400,
        usage_retention_days: int = 400,
        record_retention_s: int = 7 * 86400,
        evicting_redis: EvictingRedis = "refuse",
        max_projects: int = 10_000,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 5.0,
        durable_replicas: int = 0,
        durable_timeout_s: float = DEFAULT_DURABLE_TIMEOUT_S,
    ) -> None:
        if failure_mode not in ("closed", "open"):
            raise InvalidRequest(f"failure_mode must be 'closed' or 'open', got {failure_mode!r}")
        if evicting_redis not in ("refuse", "warn"):
            raise InvalidRequest(
                f"evicting_redis must be 'refuse' or 'warn', got {evicting_redis!r}"
            )
        for label, value in (
            ("max_projects", max_projects),
            ("breaker_failures", breaker_failures),
            ("audit_retention_days", audit_retention_days),
            # 0 would expire each day's attribution as it is written
            ("usage_retention_days", usage_retention_days),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"{label} must be a positive int, got {value!r}")
        if (
            isinstance(record_retention_s, bool)
            or not isinstance(record_retention_s, int)
            or record_retention_s < 0
        ):
            raise InvalidRequest(
                f"record_retention_s must be an int >= 0, got {record_retention_s!r}"
            )
        _validate.seconds("breaker_cooldown_s", breaker_cooldown_s, maximum=3600)
        durability = _durability(client, durable_replicas, durable_timeout_s)
        self._client = client
        _warn_without_timeout(client)
        self._scripts = self._script_runner(client, durability)
        self._durable = durability is not None  # the drivers send writes by _scripts.durable
        self._core = LimiterCore(
            Settings(
                namespace=namespace,
                failure_mode=failure_mode,
                audit_retention_days=audit_retention_days,
                usage_retention_days=usage_retention_days,
                record_retention_s=record_retention_s,
                evicting_redis=evicting_redis,
                max_projects=max_projects,
                breaker_failures=breaker_failures,
                breaker_cooldown_s=breaker_cooldown_s,
                sharded=isinstance(client, RedisCluster | AsyncRedisCluster),
            )
        )
        if type(client).__module__.startswith("fakeredis"):
            self._core.trust_memory_policy()  # the embedded server never evicts

    @property
    def client(self) -> Any:
        """The redis-py client this limiter uses."""
        return self._client

    @property
    def namespace(self) -> str:
        return self._core.settings.namespace

    def audit_key(self, project: str) -> str:
        """The audit stream of ``project`` (``XREAD BLOCK 0 STREAMS <key> $`` tails it)."""
        return self._core.keys(project).audit


def _durability(client: Any, replicas: object, timeout_s: object) -> Durability | None:
    """What ``durable_replicas`` / ``durable_timeout_s`` ask for, checked; None for 0."""
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 0 <= replicas <= MAX_DURABLE_REPLICAS
    ):
        raise InvalidRequest(
            f"durable_replicas must be an int from 0 to {MAX_DURABLE_REPLICAS}, got {replicas!r}"
        )
    timeout = _validate.seconds("durable_timeout_s", timeout_s, maximum=60)
    if replicas == 0:
        return None
    if type(client).__module__.startswith("fakeredis"):
        raise InvalidRequest("the embedded memory:// server has no replicas: durable_replicas=0")
    socket_timeout = _socket_timeout(client)
    if socket_timeout is not None and timeout >= socket_timeout:
        raise InvalidRequest(
            f"durable_timeout_s ({timeout:g}) must be below the client's socket timeout"
            f" ({socket_timeout:g} s), or the socket gives up before WAIT answers"
        )
    retry: Any = getattr(client, "retry", None)  # a cluster's own retry (its nodes have none)
    return Durability(
        replicas=replicas,
        timeout_ms=max(1, round(timeout * 1000)),
        sharded=isinstance(client, RedisCluster | AsyncRedisCluster),
        retries=retry.get_retries() if hasattr(retry, "get_retries") else DEFAULT_RETRIES,
    )


def _socket_timeout(client: Any) -> float | None:
    """The client's socket timeout in seconds, when it can be read (None: unknown or none)."""
    if isinstance(client, RedisCluster | AsyncRedisCluster):
        kwargs = client.get_connection_kwargs()
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    value = kwargs.get("socket_timeout") if isinstance(kwargs, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _warn_without_timeout(client: Any) -> None:
    """A client without a socket timeout hangs every request when Redis stalls: say so."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if isinstance(kwargs, dict) and kwargs.get("socket_timeout") is None:
        logger.warning(
            "prism.client.no_timeout",
            hint="set socket_timeout (and socket_connect_timeout) on the redis client, or use"
            " Limiter.from_url",
        )


def raise_for(decision: Decision) -> None:
    """Raise the ``LimitExceeded`` subclass that matches a denial."""
    if decision.allowed:
        return
    if decision.reason == "budget":
        raise BudgetExceeded(decision)
    if decision.reason in ("rate", "rate-too-large"):
        raise RateLimited(decision)
    if decision.reason in ("model-denied", "model-not-allowed", "no-policy"):
        raise ModelNotAllowed(decision)
    raise LimitExceeded(decision)


_COUNTS = frozenset(TokenUsage.__struct_fields__)


def usage_of(usage: Any, counts: dict[str, Any]) -> TokenUsage:
    """A usage object/dict, or explicit counts (``input_tokens=...``), never both."""
    if not _COUNTS.issuperset(counts):
        unknown = sorted(set(counts) - _COUNTS)
        raise InvalidRequest(
            f"settle() got unknown token count{'s' if len(unknown) > 1 else ''}"
            f" {', '.join(map(repr, unknown))}; it accepts"
            f" {', '.join(TokenUsage.__struct_fields__)}"
        )
    given = {k: v for k, v in counts.items() if v is not None}
    if usage is not None and given:
        raise InvalidRequest("pass a usage object or explicit token counts, not both")
    if usage is not None:
        return usage if isinstance(usage, TokenUsage) else _usage.from_usage(usage)
    if "input_tokens" not in given or "output_tokens" not in given:
        raise InvalidRequest("settle needs a usage object, or input_tokens and output_tokens")
    return _usage.from_counts(**given)


def estimate_usage(held: Held) -> TokenUsage:
    """The usage an unsettled reservation is charged for: its estimate. settle.lua books the
    hold for it (the estimate at the dearest input class), so a real settle later never adds
    more than that charge left room for."""
    return TokenUsage(input_tokens=held.est_tokens, output_tokens=held.max_output_tokens)
