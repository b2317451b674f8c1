"""Redis clients for ``from_url``: explicit timeouts, bounded retries, and ``memory://``.

redis-py's default retries a timed-out command up to ten times; every script here is idempotent
by reservation id, so a bounded retry is safe, and a final failure surfaces as
``BackendUnavailable`` ("outcome unknown; retry with the same id").
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import BlockingConnectionPool, Redis
from redis.asyncio import BlockingConnectionPool as AsyncBlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from prism_limiter.errors import InvalidRequest

_FAKE_SERVERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _fake_server(url: str) -> Any:
    import fakeredis  # noqa: PLC0415 - only the embedded mode pays for importing it

    with _LOCK:
        server = _FAKE_SERVERS.get(url)
        if server is None:
            server = _FAKE_SERVERS[url] = fakeredis.FakeServer()
        return server


def _options(socket_timeout: float, retries: int) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 30,
        "_retries": retries,
    }


def make_client(
    url: str, *, asyncio: bool, socket_timeout: float, retries: int, max_connections: int
) -> Any:
    """A client for ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``rediss+cluster://`` or ``memory://[name]`` (an in-process server shared by that name).

    Single-node clients use a *blocking* pool of ``max_connections``: a burst of concurrent
    callers waits (up to ``socket_timeout`` x 5) for a connection instead of failing at once.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        import fakeredis  # noqa: PLC0415 - only the embedded mode pays for importing it

        cls = fakeredis.FakeAsyncRedis if asyncio else fakeredis.FakeRedis
        return cls(server=_fake_server(url))
    opts = _options(socket_timeout, retries)
    n = opts.pop("_retries")
    if asyncio:
        opts["retry"] = AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), n)
        if scheme.endswith("+cluster"):
            return AsyncRedisCluster.from_url(_plain(url), **_cluster_opts(opts))
        if scheme in ("redis", "rediss", "unix"):
            apool = AsyncBlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout * 5, **opts
            )
            return AsyncRedis.from_pool(apool)  # the client owns (and closes) its pool
    else:
        opts["retry"] = Retry(ExponentialBackoff(cap=0.2, base=0.02), n)
        if scheme.endswith("+cluster"):
            return RedisCluster.from_url(_plain(url), **_cluster_opts(opts))
        if scheme in ("redis", "rediss", "unix"):
            pool = BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout * 5, **opts
            )
            return Redis.from_pool(pool)  # the client owns (and closes) its pool
    raise InvalidRequest(
        f"unsupported URL scheme {scheme!r}: use redis://, rediss://, unix://, redis+cluster://,"
        " rediss+cluster:// or memory://"
    )


def _plain(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.removesuffix("+cluster")))


def _cluster_opts(opts: dict[str, Any]) -> dict[str, Any]:
    out = dict(opts)
    out.pop("health_check_interval", None)
    return out
