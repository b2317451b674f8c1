"""A throwaway redis-server on a free port in a temp dir (never 6379), for tests and the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@contextmanager
def redis_server(*extra: str) -> Iterator[str]:
    """Yield ``redis://127.0.0.1:<port>/0`` of a fresh server; stop it afterwards."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "redis-server (>= 6.2) is not on PATH; install it (apt-get install redis-server)"
        )
    tmp = Path(tempfile.mkdtemp(prefix="prism-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(tmp / "redis.log"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server did not start: {(tmp / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def given_url() -> str | None:
    return os.environ.get("PRISM_TEST_REDIS_URL")
