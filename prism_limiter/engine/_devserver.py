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
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot


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


@dataclass
class DevNode:
    """One redis-server process (of a dev cluster, say) that a test may kill -9 and start again."""

    port: int
    argv: list[str]
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server (again: same port, directory and ``nodes.conf``); wait for PING."""
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ping(self.url, self.proc, self.directory)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; its clients see their connections reset."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def dev_node(
    directory: Path, *extra: str, port: int | None = None, sentinel_conf: Path | None = None
) -> DevNode:
    """A redis-server (not started) on a free port, without persistence, whose replicas' full
    syncs start at once; or, with ``sentinel_conf``, a Sentinel (``--sentinel``, which takes a
    config file it may rewrite and no persistence options). ``directory`` is created."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server (>= 6.2) is not on PATH")
    directory.mkdir(parents=True)
    port = free_port() if port is None else port
    head = [binary, str(sentinel_conf), "--sentinel"] if sentinel_conf else [binary]
    data = [] if sentinel_conf else ["--save", "", "--appendonly", "no"]
    data += [] if sentinel_conf else ["--repl-diskless-sync-delay", "0"]
    argv = [
        *head,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        *data,
        "--logfile",
        str(directory / "log"),
        *extra,
    ]
    return DevNode(port, argv, directory)


@dataclass
class DevCluster:
    """A running dev cluster: its ``redis+cluster://`` URL and its nodes."""

    url: str
    nodes: list[DevNode] = field(default_factory=list)

    def node(self, port: int) -> DevNode:
        return next(n for n in self.nodes if n.port == port)

    def shards(self) -> dict[int, list[int]]:
        """Each serving primary's port -> its replicas' ports, as a live node sees them now."""
        for node in self.nodes:
            if not node.alive:
                continue
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
            try:
                table = client.cluster("NODES")
            except redis.RedisError:
                continue
            finally:
                client.close()
            return _shards(table)
        raise RuntimeError("no live node in the cluster")

    def primary_for(self, key: str) -> DevNode:
        """The node that serves ``key``'s slot now (its hash tag decides, as for any key)."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.alive:
                continue
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
            try:
                info = client.cluster("SLOTS")
            except redis.RedisError:
                continue
            finally:
                client.close()
            for lo, hi, primary, *_ in info:  # [start, end, [host, port, id], replicas...]
                if int(lo) <= slot <= int(hi):
                    return self.node(int(primary[1]))
        raise RuntimeError(f"no live node knows who serves slot {slot}")

    def wait_healthy(self, deadline_s: float = 60) -> None:
        """Until every live node says ``cluster_state:ok`` and every primary has as many
        online replicas as it should (the replicas of the start, or the nodes started again)."""
        deadline = time.monotonic() + deadline_s
        while not self._healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        live = [n for n in self.nodes if n.alive]
        try:
            for node in live:
                client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
                try:
                    if not _cluster_ok(client.cluster("INFO")):
                        return False
                    info = client.info("replication")
                finally:
                    client.close()
                if info.get("role") == "master" and info.get("connected_slaves", 0):
                    online = [v for k, v in info.items() if k.startswith("slave")]
                    if not all(isinstance(v, dict) and v.get("state") == "online" for v in online):
                        return False
            shards = self.shards()
        except redis.RedisError:
            return False
        replicas = sum(len(r) for r in shards.values())
        return len(shards) + replicas == len(live) and all(self.node(p).alive for p in shards)


@contextmanager
def redis_cluster(
    masters: int = 3,
    *,
    replicas: int = 0,
    node_timeout_ms: int | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[str]:
    """Yield ``redis+cluster://127.0.0.1:<port>`` of a fresh cluster of ``masters`` primaries,
    each with ``replicas`` replicas (see :func:`dev_cluster` for the nodes themselves)."""
    with dev_cluster(
        masters, replicas=replicas, node_timeout_ms=node_timeout_ms, extra=extra
    ) as cluster:
        yield cluster.url


@contextmanager
def dev_cluster(
    masters: int = 3,
    *,
    replicas: int = 0,
    node_timeout_ms: int | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[DevCluster]:
    """A fresh cluster on free ports in a temp dir: ``masters`` primaries with ``replicas``
    replicas each (``redis-cli --cluster create ... --cluster-replicas``), stopped afterwards.

    ``node_timeout_ms`` sets ``cluster-node-timeout`` (how long a silent primary takes to be
    failed over); ``extra`` are more ``redis-server`` options for every node.
    """
    cli = shutil.which("redis-cli")
    if redis_server_binary() is None or cli is None:
        raise RuntimeError("redis-server and redis-cli (>= 6.2) are needed on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="prism-cluster-"))
    cluster = DevCluster("")
    options = list(extra)
    if node_timeout_ms is not None:
        options += ["--cluster-node-timeout", str(node_timeout_ms)]
    try:
        for _ in range(masters * (1 + replicas)):
            port = _free_cluster_port()
            cluster_options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            node = dev_node(tmp / str(port), *cluster_options, *options, port=port)
            cluster.nodes.append(node)
            node.start()
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in cluster.nodes)]
        if replicas:
            create += ["--cluster-replicas", str(replicas)]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)
        cluster.wait_healthy()
        cluster.url = f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}"
        yield cluster
    finally:
        for n in cluster.nodes:
            if n.alive:
                assert n.proc is not None
                n.proc.terminate()
        for n in cluster.nodes:
            n.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _shards(table: object) -> dict[int, list[int]]:
    """``CLUSTER NODES`` (redis-py's dict, or the raw text) -> each primary that serves slots
    -> its replicas."""
    text = table.decode() if isinstance(table, bytes) else table
    rows: list[tuple[int, str, list[str], str, bool]] = []
    if isinstance(text, str):
        for line in text.splitlines():
            parts = line.split()
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            rows.append((port, parts[0], parts[2].split(","), parts[3], len(parts) > 8))
    elif isinstance(text, dict):
        for address, row in text.items():
            port = int(str(address).split("@")[0].rsplit(":", 1)[1])
            flags = row["flags"].split(",")
            rows.append((port, row["node_id"], flags, row["master_id"], bool(row["slots"])))
    ids = {node_id: port for port, node_id, _, _, _ in rows}
    shards: dict[int, list[int]] = {}
    for port, _, flags, _, serving in rows:
        if "master" in flags and serving and not {"fail", "fail?"} & set(flags):
            shards[port] = []
    for port, _, flags, master, _ in rows:
        if "slave" in flags and not {"fail", "fail?"} & set(flags) and ids.get(master) in shards:
            shards[ids[master]].append(port)
    return shards


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
