"""Redis clients for ``from_url``: explicit timeouts, bounded retries, and ``memory://``.

redis-py's default retries a timed-out command up to ten times; every script here is idempotent
by reservation id, so a bounded retry is safe, and a final failure surfaces as
``BackendUnavailable`` ("outcome unknown; retry with the same id").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import BlockingConnectionPool, Redis
from redis.asyncio import BlockingConnectionPool as AsyncBlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import parse_url as async_parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
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
    scheme = check_url(url, asyncio=asyncio)
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
    raise AssertionError(scheme)  # check_url admits no other scheme


_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def check_url(url: object, *, asyncio: bool) -> str:
    """Validate a ``from_url`` URL without connecting; return its scheme.

    Checks the scheme, the port (1-65535), the database number in the path and, through
    redis-py's own parser, the query options. Messages never repeat the URL, which may hold a
    password.
    """
    if not isinstance(url, str):
        raise InvalidRequest(f"a Redis URL must be a string, got {type(url).__name__}")
    try:
        url.encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            "the Redis URL holds a lone surrogate, which cannot be encoded as UTF-8"
        ) from None
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise InvalidRequest(f"invalid Redis URL: {exc}") from None
    scheme = parts.scheme
    if scheme == "memory":  # memory://<any name>: nothing to connect to
        return scheme
    if scheme not in _SCHEMES:
        raise InvalidRequest(
            f"unsupported URL scheme {scheme!r}: use redis://, rediss://, unix://,"
            " redis+cluster://, rediss+cluster:// or memory://"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise InvalidRequest("invalid Redis URL: the port must be a number from 1 to 65535")
    db = parts.path.strip("/")
    if scheme != "unix" and db and not (db.isascii() and db.isdigit()):
        raise InvalidRequest(
            f"invalid Redis URL: the database in the path must be a number, got {db!r}"
        )
    # Each face parses with its own redis-py module (their option parsers differ slightly).
    parse: Callable[[str], object] = async_parse_url if asyncio else parse_url
    try:
        parse(_plain(url) if scheme.endswith("+cluster") else url)
    except ValueError as exc:  # a query option redis-py cannot parse
        raise InvalidRequest(f"invalid Redis URL: {exc}") from None
    return scheme


def _plain(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.removesuffix("+cluster")))


def _cluster_opts(opts: dict[str, Any]) -> dict[str, Any]:
    out = dict(opts)
    out.pop("health_check_interval", None)
    return out
