"""What ``durable_replicas`` costs and what it buys: reserve+settle latency with
``durable_replicas=1`` against ``0``, and how many acknowledged settles a failover loses
without it.

- latency: a private primary and one replica of it (loopback, no persistence), two limiters
  on that primary, one with ``durable_replicas=1``. Every iteration times one reserve+settle
  pair on each, in a rotating order, so noise hits both alike; the cost is the difference
  of the medians.
- loss: a dev cluster of 3 primaries with a replica each (``cluster-node-timeout`` 1000 ms).
  Each round, ``--threads`` threads reserve+settle on one project without durable_replicas
  and as many on another project of the same shard with ``durable_replicas=1``; that shard's
  primary is SIGKILLed under the load, and once its replica has taken over, every settle
  acknowledged before the kill is looked up on the promoted replica. The killed node then
  rejoins as a replica for the next round. On loopback the replication stream leaves in the
  same event-loop pass as the reply, so a SIGKILL alone rarely loses anything.
- loss over a slow link: a primary whose replica reaches it through a forwarder that delivers
  every chunk ``--lag-ms`` late (a replica in another zone). The same two loads; then the
  link is cut and the primary SIGKILLed at once (a partition and a crash), the replica is
  promoted (``REPLICAOF NO ONE``, what Sentinel would do) and every settle acknowledged
  before the crash is looked up on it.

    python benchmarks/durability.py [--iterations N] [--warmup N] [--failovers N]
                                    [--threads N] [--lag-ms 20] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from _common import (
    MODEL,
    RESERVE,
    SETTLE,
    TAGS,
    emit,
    environment,
    header,
    interleave,
    policy,
    private_server,
    progress,
    summary,
    table,
    us_since,
)

from prism_limiter import BackendUnavailable, Limiter
from prism_limiter.engine._devserver import DevCluster, dev_cluster, dev_node

# -- latency --------------------------------------------------------------------------------


def _pair(lim: Limiter, project: str) -> Callable[[], list[float]]:
    def pair() -> list[float]:
        t0 = time.perf_counter()
        lim.reserve(project, MODEL, tags=TAGS, **RESERVE).settle(**SETTLE)
        return [us_since(t0)]

    return pair


def _wait_replica(primary: Any) -> None:
    deadline = time.monotonic() + 60
    while True:
        info = primary.info("replication")
        replica = info.get("slave0")
        if isinstance(replica, dict) and replica.get("state") == "online":
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not connect")
        time.sleep(0.05)


def latency(iterations: int, warmup: int) -> tuple[dict[str, Any], dict[str, Any]]:
    with private_server("--repl-diskless-sync-delay", "0") as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        with private_server("--replicaof", "127.0.0.1", port):
            plain = Limiter.from_url(url)
            durable = Limiter.from_url(url, durable_replicas=1)
            plain.apply_policy(policy({"l4": 4}))  # 3 budgets + 1 rate limit
            _wait_replica(plain.client)
            variants = {
                "durable_replicas=0": _pair(plain, "l4"),
                "durable_replicas=1": _pair(durable, "l4"),
            }
            progress(f"latency: 2 variants x {iterations} iterations")
            samples = interleave(variants, iterations, warmup)
            env = environment(plain.client)
            rows = {name: summary(columns[0]) for name, columns in samples.items()}
            plain.close()
            durable.close()
    cost = rows["durable_replicas=1"]["p50_us"] - rows["durable_replicas=0"]["p50_us"]
    return {"pairs": rows, "p50_cost_us": cost}, env


# -- loss -----------------------------------------------------------------------------------


class Writers:
    """``threads`` threads of reserve+settle on ``project``; the ids whose settle returned,
    with the time it returned."""

    def __init__(self, lim: Limiter, project: str, threads: int, round_no: int) -> None:
        self.lim, self.project, self._round = lim, project, round_no
        self.acked: list[tuple[float, str]] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            rid = f"r{self._round}-t{t}-{i}"
            i += 1
            try:
                r = self.lim.reserve(self.project, MODEL, reservation_id=rid, **RESERVE)
                r.settle(**SETTLE)
            except BackendUnavailable:
                with self._lock:
                    self.refused += 1
                time.sleep(0.005)
                continue
            with self._lock:
                self.acked.append((time.monotonic(), rid))


def _settled(port: int, project: str, ids: list[str]) -> int:
    client: Any = redis.Redis(port=port, socket_timeout=5)
    try:
        records = client.hmget(f"prism:{{{project}}}:holds", ids) if ids else []
    finally:
        client.close()
    return sum(1 for r in records if r and r.startswith(b"S"))


def _same_shard(cluster: DevCluster) -> tuple[str, str]:
    first = cluster.primary_for("{plain0}").port
    names = [f"plain{i}" for i in range(500) if cluster.primary_for(f"{{plain{i}}}").port == first]
    return names[0], names[1]


def cluster_loss(failovers: int, threads: int) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with dev_cluster(
        3, replicas=1, node_timeout_ms=1000, extra=("--cluster-require-full-coverage", "no")
    ) as cluster:
        plain_project, durable_project = _same_shard(cluster)
        opts: dict[str, Any] = {"socket_timeout": 1, "breaker_cooldown_s": 0.5}
        plain = Limiter.from_url(cluster.url, **opts)
        durable = Limiter.from_url(cluster.url, durable_replicas=1, **opts)
        plain.apply_policy(policy({plain_project: 1, durable_project: 1}))
        for n in range(failovers):
            doomed = cluster.primary_for(f"{{{plain_project}}}")
            loads = {
                "durable_replicas=0": Writers(plain, plain_project, threads, n),
                "durable_replicas=1": Writers(durable, durable_project, threads, n),
            }
            time.sleep(1.0)  # load before the crash
            killed_at = time.monotonic()
            doomed.kill()
            cluster.wait_healthy()
            promoted = cluster.primary_for(f"{{{plain_project}}}")
            for w in loads.values():
                w.stop()
            row: dict[str, Any] = {"failover_s": time.monotonic() - killed_at}
            for name, w in loads.items():
                before = [rid for t, rid in w.acked if t < killed_at]
                kept = _settled(promoted.port, w.project, before)
                row[name] = {
                    "acked_before_kill": len(before),
                    "lost": len(before) - kept,
                    "refused": w.refused,
                }
            rounds.append(row)
            progress(f"cluster loss: round {n + 1}/{failovers}: {row}")
            doomed.start()  # back as a replica of the promoted node
            cluster.wait_healthy(deadline_s=120)
        plain.close()
        durable.close()
    return {"scenario": "cluster, loopback, SIGKILL", **_totals(rounds, threads)}


def _totals(rounds: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    totals = {
        name: {
            "acked_before_kill": sum(r[name]["acked_before_kill"] for r in rounds),
            "lost": sum(r[name]["lost"] for r in rounds),
            "rounds_with_loss": sum(1 for r in rounds if r[name]["lost"]),
            "refused": sum(r[name]["refused"] for r in rounds),
        }
        for name in ("durable_replicas=0", "durable_replicas=1")
    }
    return {"rounds": rounds, "totals": totals, "threads_per_load": threads}


class LaggingLink:
    """A TCP forwarder to ``target_port`` that delivers every chunk ``lag_s`` after it came,
    both ways; ``cut()`` drops what is still on its way and every connection (a partition)."""

    def __init__(self, target_port: int, lag_s: float) -> None:
        self.target_port, self.lag_s = target_port, lag_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                near, _ = self._listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [near, far]
            for src, dst in ((near, far), (far, near)):
                pending: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(src, pending), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, pending), daemon=True).start()

    def _read(self, src: socket.socket, pending: queue.Queue[tuple[float, bytes]]) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                pending.put((time.monotonic() + self.lag_s, data))
        pending.put((0.0, b""))

    def _write(self, dst: socket.socket, pending: queue.Queue[tuple[float, bytes]]) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = pending.get()
                time.sleep(max(0.0, due - time.monotonic()))
                if not data or self._cut.is_set():
                    return
                dst.sendall(data)

    def cut(self) -> None:
        self._cut.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()


def link_loss(failovers: int, threads: int, lag_ms: int) -> dict[str, Any]:
    """Rounds on a fresh primary + replica, the replica behind a ``lag_ms`` link."""
    rounds: list[dict[str, Any]] = []
    for n in range(failovers):
        tmp = Path(tempfile.mkdtemp(prefix="prism-bench-link-"))
        primary = dev_node(tmp / "primary")
        primary.start()
        link = LaggingLink(primary.port, lag_ms / 1000)
        replica = dev_node(tmp / "replica", "--replicaof", "127.0.0.1", str(link.port))
        replica.start()
        watch: Any = redis.Redis(port=primary.port, socket_timeout=5)
        try:
            _wait_replica(watch)
            opts: dict[str, Any] = {"socket_timeout": 1, "breaker_cooldown_s": 0.5}
            plain = Limiter.from_url(primary.url, **opts)
            durable = Limiter.from_url(primary.url, durable_replicas=1, **opts)
            plain.apply_policy(policy({"plain": 1, "durable": 1}))
            loads = {
                "durable_replicas=0": Writers(plain, "plain", threads, n),
                "durable_replicas=1": Writers(durable, "durable", threads, n),
            }
            time.sleep(1.0)  # load before the crash
            written = watch.info("replication")["master_repl_offset"]
            killed_at = time.monotonic()
            link.cut()
            primary.kill()
            for w in loads.values():
                w.stop()
            promoted: Any = redis.Redis(port=replica.port, socket_timeout=5)
            received = promoted.info("replication")["master_repl_offset"]
            promoted.execute_command("REPLICAOF", "NO", "ONE")
            promoted.close()
            # How far behind the replica was when the link went (bytes of replication stream).
            row: dict[str, Any] = {"behind_bytes": max(0, written - received)}
            for name, w in loads.items():
                before = [rid for t, rid in w.acked if t < killed_at]
                kept = _settled(replica.port, w.project, before)
                row[name] = {
                    "acked_before_kill": len(before),
                    "lost": len(before) - kept,
                    "refused": w.refused,
                }
            rounds.append(row)
            progress(f"link loss ({lag_ms} ms): round {n + 1}/{failovers}: {row}")
            plain.close()
            durable.close()
        finally:
            watch.close()
            link.cut()
            for node in (replica, primary):
                node.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "scenario": f"replica behind a {lag_ms} ms link, cut + SIGKILL",
        **_totals(rounds, threads),
    }


def render(report: dict[str, Any]) -> str:
    lat = report["latency"]["pairs"]
    lines = [
        header(report),
        "",
        "reserve+settle (3 budgets + 1 rate limit), one primary + one replica, interleaved:",
        table(
            ["variant", "p50 us", "p99 us", "n"],
            [[k, v["p50_us"], v["p99_us"], int(v["n"])] for k, v in lat.items()],
        ),
        f"cost of durable_replicas=1 at the median: {report['latency']['p50_cost_us']:.0f} us",
    ]
    for loss_ in report.get("loss", []):
        lines += [
            "",
            f"{len(loss_['rounds'])} failovers, {loss_['scenario']},"
            f" {loss_['threads_per_load']} threads per variant:",
            table(
                ["variant", "acked before kill", "lost", "rounds with loss", "refused"],
                [
                    [k, v["acked_before_kill"], v["lost"], v["rounds_with_loss"], v["refused"]]
                    for k, v in loss_["totals"].items()
                ],
            ),
        ]
        behind = [r["behind_bytes"] for r in loss_["rounds"] if "behind_bytes" in r]
        if behind:
            lines.append(
                "replica behind the primary when the link was cut: "
                + ", ".join(f"{b / 1024:.0f} KiB" for b in behind)
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--failovers", type=int, default=5, help="0 skips the loss part")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--lag-ms", type=int, default=20, help="the slow link's lag")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lat, env = latency(args.iterations, args.warmup)
    report: dict[str, Any] = {"benchmark": "durability", "environment": env, "latency": lat}
    if args.failovers:
        report["loss"] = [
            cluster_loss(args.failovers, args.threads),
            link_loss(args.failovers, args.threads, args.lag_ms),
        ]
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
