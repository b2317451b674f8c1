"""from_url: a malformed URL raises InvalidRequest before any connection is attempted."""

from __future__ import annotations

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
]


@pytest.mark.parametrize("cls", [Limiter, AsyncLimiter])
@pytest.mark.parametrize(("url", "needle"), BAD_URLS, ids=repr)
def test_a_bad_url_is_an_invalid_request(cls: Any, url: object, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        cls.from_url(url)


def test_the_password_is_not_repeated() -> None:
    with pytest.raises(InvalidRequest) as exc:
        Limiter.from_url("redis://user:s3cret@h:notaport/0")
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
