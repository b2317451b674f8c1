"""A redis-server the test can kill -9 and start again on the same port and data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from prism_limiter.engine._devserver import free_port, redis_server_binary


class DurableServer:
    """AOF in ``directory``, fsynced per ``appendfsync``: with ``always`` (the default) an
    acknowledged write survives kill -9; ``everysec`` and ``no`` leave the fsync to a timer or
    to the OS."""

    def __init__(self, directory: Path, *extra: str, appendfsync: str = "always") -> None:
        assert appendfsync in ("always", "everysec", "no"), appendfsync
        self.directory = directory
        self.port = free_port()
        self.extra = extra
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not on PATH"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
