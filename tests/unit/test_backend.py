"""from_url: a malformed URL raises InvalidRequest before any connection is attempted."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from prism_limiter import AsyncLimiter, InvalidRequest, Limiter


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


BAD_URLS = [
    ("redis://h:notaport", "port"),
    ("redis://h:99999", "port"),
    ("redis://h:0", "port"),
    ("redis://h:-1", "port"),
    ("redis://h:6379:6380", "port"),
    ("rediss://h:x/0", "port"),
    ("redis+cluster://h:notaport", "port"),
    ("rediss+cluster://h:x", "port"),
    ("redis://[::1", "IPv6"),
    ("redis://h/0?socket_timeout=abc", "socket_timeout"),
    ("redis://h?db=x", "db"),
    ("unix:///tmp/redis.sock?db=x", "db"),
    ("redis+cluster://h:7000/?socket_timeout=abc", "socket_timeout"),
    ("redis://h/notadb", "database"),
    ("redis://h/-1", "database"),
    ("ftp://h", "unsupported URL scheme"),
    ("", "unsupported URL scheme"),
    ("redis://h\ud800:6379", "UTF-8"),
    (42, "string"),
    (None, "string"),
    ("redis+sentinel://h:26379", "service"),
    ("redis+sentinel://h:26379/", "service"),
    ("rediss+sentinel://h:26379//0", "service"),
    ("redis+sentinel://h:notaport/mymaster", "port"),
    ("redis+sentinel://h:0/mymaster", "port"),
    ("redis+sentinel://a:26379,b:99999/mymaster", "port"),
    ("redis+sentinel://a:26379,,b:26379/mymaster", "host"),
    ("redis+sentinel:///mymaster", "host"),
    ("redis+sentinel://[::1:26379/mymaster", "IPv6"),
    ("redis+sentinel://[::1]x/mymaster", "IPv6"),
    ("redis+sentinel://h/mymaster/x", "database"),
    ("redis+sentinel://h/mymaster/0/more", "nothing after"),
    ("redis+sentinel://h/mymaster?socket_timeout=abc", "socket_timeout"),
]


@pytest.mark.parametrize("cls", [Limiter, AsyncLimiter])
@pytest.mark.parametrize(("url", "needle"), BAD_URLS, ids=repr)
def test_a_bad_url_is_an_invalid_request(cls: Any, url: object, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        cls.from_url(url)


@pytest.mark.parametrize(
    "url", ["redis://user:s3cret@h:notaport/0", "redis+sentinel://user:s3cret@h:x/mymaster"]
)
def test_the_password_is_not_repeated(url: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        Limiter.from_url(url)
    assert "s3cret" not in str(exc.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6380/2",
        "rediss://h",
        "redis://h/",
        "unix:///tmp/redis.sock",
        "redis://[::1]:6379",
    ],
)
def test_good_urls_build_a_client_without_connecting(url: str) -> None:
    Limiter.from_url(url).close()


SENTINEL_URLS = [
    "redis+sentinel://h:26379/mymaster",
    "redis+sentinel://h/mymaster/2",
    "redis+sentinel://user:pw@a:26379,b:26380,[::1]:26381/mymaster/0/",
    "rediss+sentinel://h:26379/mymaster?ssl_cert_reqs=none",
]


@pytest.mark.parametrize("url", SENTINEL_URLS)
def test_sentinel_urls_build_a_client_without_connecting(url: str) -> None:
    """Both faces build a Sentinel-backed client for the service; nothing connects yet."""
    lim = Limiter.from_url(url)
    pool = lim.client.connection_pool
    assert pool.service_name == "mymaster" and pool.is_master
    assert pool.connection_kwargs["socket_timeout"] == 1.0
    lim.close()
    alim = AsyncLimiter.from_url(url)
    assert alim.client.connection_pool.service_name == "mymaster"
    asyncio.run(alim.aclose())


def test_a_sentinel_url_carries_db_credentials_and_tls() -> None:
    lim = Limiter.from_url("rediss+sentinel://u:pw@a:1,b/svc/3?ssl_cert_reqs=none")
    pool = lim.client.connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "pw")
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 26379]
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)
    assert all(s.connection_pool.connection_class.__name__ == "SSLConnection" for s in sentinels)
    lim.close()
