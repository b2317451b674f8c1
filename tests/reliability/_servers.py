"""Servers the reliability tests kill: one with AOF restarted on its data, and a primary with a
replica and a Sentinel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from prism_limiter.engine._devserver import DevNode, dev_node, free_port, redis_server_binary


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


@dataclass
class SentinelGroup:
    """A primary, its replica and one Sentinel watching them, on free ports."""

    service: str
    primary: DevNode
    replica: DevNode
    sentinel: DevNode

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def primary_port(self) -> int:
        """The port of the primary the Sentinel names now."""
        client = redis.Redis(port=self.sentinel.port, socket_timeout=5)
        try:
            address: Any = client.sentinel_get_master_addr_by_name(self.service)
        finally:
            client.close()
        return int(address[1])

    def wait_replicated(self, deadline_s: float = 30) -> None:
        """Until the replica has everything the primary wrote so far."""
        deadline = time.monotonic() + deadline_s
        client = redis.Redis(port=self.primary.port, socket_timeout=5)
        try:
            while True:
                info = client.info("replication")
                replica = info.get("slave0")
                if (
                    isinstance(replica, dict)
                    and replica.get("state") == "online"
                    and int(replica["offset"]) >= int(info["master_repl_offset"])
                ):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica did not catch up: {info}")
                time.sleep(0.02)
        finally:
            client.close()


@contextmanager
def sentinel_group(
    service: str = "prism", *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000
) -> Iterator[SentinelGroup]:
    """Start a primary, a replica of it and a Sentinel (``redis-server --sentinel``) that
    fails the primary over ``down_after_ms`` after it stops answering; stop them afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="prism-sentinel-"))
    primary_port, sentinel_port = free_port(), free_port()
    conf = tmp / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
        f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
    )
    group = SentinelGroup(
        service,
        dev_node(tmp / "primary", port=primary_port),
        dev_node(tmp / "replica", "--replicaof", "127.0.0.1", str(primary_port)),
        dev_node(tmp / "sentinel", port=sentinel_port, sentinel_conf=conf),
    )
    try:
        group.primary.start()
        group.replica.start()
        group.wait_replicated()
        group.sentinel.start()
        client = redis.Redis(port=sentinel_port, socket_timeout=5)
        deadline = time.monotonic() + 30
        while not client.sentinel_slaves(service):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not discover the replica")
            time.sleep(0.05)
        client.close()
        yield group
    finally:
        for node in (group.sentinel, group.replica, group.primary):
            node.stop()
        shutil.rmtree(tmp, ignore_errors=True)
