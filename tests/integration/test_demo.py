"""The demo runs to its end: worker processes share one budget until it blocks them. It runs on
the URL given, else PRISM_REDIS_URL, else a private redis-server, else memory://, and says
which; it never assumes a Redis on localhost:6379."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from _readme import ROOT, command_env, console_commands

from prism_limiter import _demo
from prism_limiter._devserver import redis_server


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRISM_REDIS_URL", raising=False)


@pytest.mark.slow
def test_demo_against_a_given_url(
    redis_url: str, rclient: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _demo.run(redis_url, workers=2) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"using the given URL {_demo._shown(redis_url)}\n")
    assert "every budget stayed within its cap" in out
    assert f"redis-cli -u '{_demo._shown(redis_url)}' XRANGE 'prism:{{search}}:audit' - +" in out
    assert rclient.xlen("prism:{search}:audit") > 0


@pytest.mark.slow
def test_demo_uses_prism_redis_url(
    redis_url: str, rclient: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("PRISM_REDIS_URL", redis_url)
    assert _demo.run(None, workers=2) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"using PRISM_REDIS_URL ({_demo._shown(redis_url)})\n")
    assert """redis-cli -u "$PRISM_REDIS_URL" XRANGE 'prism:{search}:audit' - +""" in out
    assert rclient.xlen("prism:{search}:audit") > 0  # it ran there


@pytest.mark.slow
@pytest.mark.usefixtures("redis_url")  # redis-server is on PATH
def test_demo_starts_a_private_redis_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    real = redis_server

    @contextmanager
    def spy() -> Iterator[str]:
        with real() as url:
            started.append(url)
            yield url

    monkeypatch.setattr(_demo, "redis_server", spy)
    assert _demo.run(None, workers=2) == 0
    out = capsys.readouterr().out
    (url,) = started
    assert not url.endswith(":6379/0")
    assert out.startswith(f"using a private redis-server at {url}, stopped when the demo ends\n")
    assert "redis-cli" not in out  # nothing to read once it is stopped


def test_demo_embedded_without_redis_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_demo, "redis_server_binary", lambda: None)
    assert _demo.run(None, workers=2) == 0
    out = capsys.readouterr().out
    assert out.startswith("using the embedded memory:// store")
    assert "blocked by" in out and "redis-cli" not in out


def test_demo_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    assert _demo.run("memory://demo-test", workers=2) == 0
    out = capsys.readouterr().out
    assert "blocked by" in out and "redis-cli" not in out


def test_demo_never_prints_a_password() -> None:
    assert _demo._shown("redis://user:s3cret@db.internal:6380/2") == (
        "redis://user:***@db.internal:6380/2"
    )
    assert _demo._shown("rediss://:s3cret@db.internal/0") == "rediss://:***@db.internal/0"
    assert _demo._shown("redis://127.0.0.1:7000/0") == "redis://127.0.0.1:7000/0"


@pytest.mark.slow
def test_readme_demo_command(redis_url: str, rclient: Any) -> None:
    """`python -m prism_limiter demo` as the README gives it, on the server PRISM_REDIS_URL
    names."""
    (command,) = console_commands("demo")
    assert command == "python -m prism_limiter demo"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=command_env(PRISM_REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert done.stdout.startswith(f"using PRISM_REDIS_URL ({_demo._shown(redis_url)})\n"), (
        done.stdout
    )
    assert "every budget stayed within its cap" in done.stdout
    assert done.stdout.count(", then blocked by ") == 4  # the 4 default workers
    assert rclient.xlen("prism:{search}:audit") > 0
