"""Redis clients for ``from_url``: explicit timeouts, bounded retries, and ``memory://``.

redis-py's default retries a timed-out command up to ten times; every script here is idempotent
by reservation id, so a bounded retry is safe, and a final failure surfaces as
``BackendUnavailable`` ("outcome unknown; retry with the same id").

``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` asks the Sentinels
for the primary of ``service`` (redis-py's ``Sentinel.master_for``); after a failover the
client's next connection goes to the promoted replica. ``rediss+sentinel://`` speaks TLS to the
Sentinels and the data nodes alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from redis import BlockingConnectionPool, Redis
from redis.asyncio import BlockingConnectionPool as AsyncBlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import parse_url as async_parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

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
    ``rediss+cluster://``, ``redis+sentinel://``, ``rediss+sentinel://`` or ``memory://[name]``
    (an in-process server shared by that name).

    Single-node clients use a *blocking* pool of ``max_connections``: a burst of concurrent
    callers waits (up to ``socket_timeout`` x 5) for a connection instead of failing at once.
    Sentinel clients use redis-py's Sentinel pool, which is not blocking: a burst beyond
    ``max_connections`` fails at once (``BackendUnavailable``).
    """
    scheme = check_url(url, asyncio=asyncio)
    if scheme == "memory":
        import fakeredis  # noqa: PLC0415 - only the embedded mode pays for importing it

        # A blocking pool, as for redis://: a burst beyond max_connections waits for a
        # connection (up to 20 s) instead of failing with "Too many connections".
        server = _fake_server(url)
        if asyncio:
            return fakeredis.FakeAsyncRedis(
                server=server,
                max_connections=max_connections,
                connection_pool_class=AsyncBlockingConnectionPool,
            )
        return fakeredis.FakeRedis(
            server=server,
            max_connections=max_connections,
            connection_pool_class=BlockingConnectionPool,
        )
    opts = _options(socket_timeout, retries)
    n = opts.pop("_retries")
    if asyncio:
        opts["retry"] = AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), n)
        if scheme.endswith("+sentinel"):
            return _sentinel_client(url, opts, max_connections, asyncio=True)
        if scheme.endswith("+cluster"):
            return AsyncRedisCluster.from_url(_plain(url), **_cluster_opts(opts))
        if scheme in ("redis", "rediss", "unix"):
            apool = AsyncBlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout * 5, **opts
            )
            return AsyncRedis.from_pool(apool)  # the client owns (and closes) its pool
    else:
        opts["retry"] = Retry(ExponentialBackoff(cap=0.2, base=0.02), n)
        if scheme.endswith("+sentinel"):
            return _sentinel_client(url, opts, max_connections, asyncio=False)
        if scheme.endswith("+cluster"):
            return RedisCluster.from_url(_plain(url), **_cluster_opts(opts))
        if scheme in ("redis", "rediss", "unix"):
            pool = BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout * 5, **opts
            )
            return Redis.from_pool(pool)  # the client owns (and closes) its pool
    raise AssertionError(scheme)  # check_url admits no other scheme


_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)
_SENTINEL_PORT = 26379


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
            " redis+cluster://, rediss+cluster://, redis+sentinel://, rediss+sentinel://"
            " or memory://"
        )
    if scheme.endswith("+sentinel"):
        _sentinel_parts(url, asyncio=asyncio)
        return scheme
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


def _sentinel_parts(
    url: str, *, asyncio: bool
) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?options]``
    -> (Sentinel addresses, service name, connection options for the primary).

    A Sentinel without a port is on 26379. The options are what redis-py's own parser makes of
    the same URL written for one node (``db``, credentials, query options, TLS).
    """
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = [_sentinel_address(h) for h in hosts.split(",")]
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if path and path[-1] == "" and len(path) > 1:
        path.pop()  # a trailing slash
    if not path or not path[0]:
        raise InvalidRequest(
            "invalid Sentinel URL: name the service in the path"
            " (redis+sentinel://host:26379/<service>[/<db>])"
        )
    if len(path) > 2:
        raise InvalidRequest(
            "invalid Sentinel URL: the path is /<service>[/<db>], with nothing after the db"
        )
    db = path[1] if len(path) == 2 else ""
    if db and not (db.isascii() and db.isdigit()):
        raise InvalidRequest(
            f"invalid Sentinel URL: the database after the service must be a number, got {db!r}"
        )
    host, port = sentinels[0]
    node = "rediss" if parts.scheme.startswith("rediss") else "redis"
    netloc = f"{userinfo}@" if userinfo else ""
    netloc += f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    one = urlunsplit((node, netloc, f"/{db}" if db else "", parts.query, ""))
    parse: Callable[[str], Any] = async_parse_url if asyncio else parse_url
    try:
        options: dict[str, Any] = dict(parse(one))
    except ValueError as exc:  # a query option redis-py cannot parse
        raise InvalidRequest(f"invalid Sentinel URL: {exc}") from None
    for key in ("host", "port", "path"):
        options.pop(key, None)
    if options.pop("connection_class", None) is not None and node == "rediss":
        options["ssl"] = True  # SentinelConnectionPool picks its TLS connection class
    return sentinels, path[0], options


def _sentinel_address(text: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` of one Sentinel."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise InvalidRequest("invalid Sentinel URL: an IPv6 address needs [brackets]")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise InvalidRequest("invalid Sentinel URL: every Sentinel needs a host")
    if not port_text:
        return host, _SENTINEL_PORT
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise InvalidRequest(
            "invalid Sentinel URL: each Sentinel's port must be a number from 1 to 65535"
        )
    return host, port


def _sentinel_client(url: str, opts: dict[str, Any], max_connections: int, *, asyncio: bool) -> Any:
    """The primary of the URL's service, found through its Sentinels (asked again on every new
    connection, so a failover is followed without a restart)."""
    sentinels, service, options = _sentinel_parts(url, asyncio=asyncio)
    ask = {k: opts[k] for k in ("socket_timeout", "socket_connect_timeout", "retry")}
    # The Sentinels speak TLS when the data nodes do; the URL's credentials are for the data
    # nodes only (Sentinels are asked without a password).
    ask.update({k: v for k, v in options.items() if k.startswith("ssl")})
    manager: Any = AsyncSentinel if asyncio else Sentinel  # (the sync one is untyped)
    return manager(sentinels, sentinel_kwargs=ask).master_for(
        service,
        redis_class=_AsyncSentinelRedis if asyncio else _SentinelRedis,
        max_connections=max_connections,
        **{**opts, **options},  # the URL's own options win, as in redis-py's from_url
    )


class _SentinelRedis(Redis):
    """A primary's client that also closes the connections to its Sentinels."""

    def close(self) -> None:
        super().close()
        pool: Any = self.connection_pool
        pool.sentinel_manager.close()


class _AsyncSentinelRedis(AsyncRedis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool: Any = self.connection_pool
        await pool.sentinel_manager.aclose()
