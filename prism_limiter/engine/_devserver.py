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
        client = redis.Redis.from_url(url, socket_timeout=5)
        deadline = time.monotonic() + 30  # a loaded machine starts servers slowly
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):
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


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """Yield ``redis+cluster://127.0.0.1:<port>`` of a fresh cluster of ``masters`` nodes."""
    binary = redis_server_binary()
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError("redis-server and redis-cli (>= 6.2) are needed on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="prism-cluster-"))
    ports = [_free_cluster_port() for _ in range(masters)]
    procs = []
    try:
        for port in ports:
            node = tmp / str(port)
            node.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(node),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--logfile",
                        str(node / "log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait_ping(f"redis://127.0.0.1:{port}/0", procs[ports.index(port)], tmp)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        for port in ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
            while not _cluster_ok(client.cluster("INFO")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.05)
            client.close()
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _cluster_ok(info: object) -> bool:
    if isinstance(info, dict):  # redis-py parses CLUSTER INFO into a dict
        return info.get("cluster_state") in ("ok", b"ok")
    return b"cluster_state:ok" in info if isinstance(info, bytes) else False


def _wait_ping(url: str, proc: subprocess.Popen[bytes], tmp: Path) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            client.close()
            return
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"a redis-server did not start (logs in {tmp})") from None
            time.sleep(0.02)
