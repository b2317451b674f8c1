"""The audit exporter: killed (SIGKILL) at the worst moments and restarted, its JSONL files
hold every entry of the stream exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from prism_limiter import AuditExporter, Limiter, Policy
from prism_limiter.audit._chain import GENESIS, link
from prism_limiter.audit._export import day_of

ROOT = Path(__file__).parents[2]
POLICY = Policy.from_toml('[projects.p]\nallow_models = ["gpt-4o"]\n')
KEY = "prism:{p}:audit"

# Run as a subprocess: an exporter that stops dead at a chosen point, says so, and waits to
# be killed ("before-ack": its 3rd batch is on disk, not acknowledged; "torn-line": half a
# line of its 4th batch is written), or one that just runs ("run").
CHILD = r"""
import sys, time
from pathlib import Path
from prism_limiter import AuditExporter, Limiter

url, out, consumer, mode, marker = sys.argv[1:6]


class Dying(AuditExporter):
    acks = 0

    def _ack(self, key, ids):
        Dying.acks += 1
        if mode == "before-ack" and Dying.acks == 3:
            Path(marker).write_text("ready")
            time.sleep(3600)
        super()._ack(key, ids)

    def _write(self, path, items):
        if mode == "torn-line" and Dying.acks == 3:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as f:
                line = items[0][1]
                f.write(line[: len(line) // 2])
                f.flush()
            Path(marker).write_text("ready")
            time.sleep(3600)
        return super()._write(path, items)


exporter = Dying(Limiter.from_url(url), out, projects=["p"], consumer=consumer, batch=50,
                 claim_idle_ms=0)
Path(marker).write_text("started") if mode == "run" else None
exporter.run() if mode == "run" else exporter.export()
"""


def _deny(lim: Limiter, n: int, start: int = 0) -> None:
    for i in range(start, start + n):  # distinct tags: one entry each
        lim.try_reserve("p", "claude-opus-4", est_tokens=1, tags={"n": str(i)})


def _spawn(url: str, out: Path, consumer: str, mode: str, marker: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, url, str(out), consumer, mode, str(marker)]
    return subprocess.Popen(args, env=env)


def _wait_for(condition: Any, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120  # a generous bound, not a measurement
    while not condition():
        assert proc.poll() is None, f"the exporter exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _lines(out: Path) -> list[bytes]:
    return [line for f in sorted(out.rglob("*.jsonl")) for line in f.read_bytes().splitlines()]


def _check_exactly_once(client: Any, out: Path) -> None:
    stream = {i.decode(): f for i, f in client.xrange(KEY)}
    rows = [json.loads(line) for line in _lines(out)]  # no torn line left: every one parses
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an entry was exported twice"
    assert set(ids) == set(stream), "an entry was lost"
    chain = GENESIS
    for row in sorted(rows, key=lambda r: tuple(int(x) for x in r["id"].split("-"))):
        fields = [(k.encode(), v.encode()) for k, v in row.items() if k != "id"]
        assert dict(fields) == stream[row["id"]]  # as written, field by field
        assert fields[-1][1] == link(chain, fields[:-1])  # the chain checks from the files
        chain = fields[-1][1]
    pending = client.xpending(KEY, "prism-export")
    assert pending["pending"] == 0


@pytest.mark.slow
def test_killed_mid_export_and_restarted_loses_and_duplicates_nothing(
    redis_url: str, rclient: Any, tmp_path: Path
) -> None:
    out, marker = tmp_path / "audit", tmp_path / "marker"
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(POLICY)
    _deny(lim, 600)

    # 1. Killed with its 3rd batch on disk but not acknowledged.
    proc = _spawn(redis_url, out, "c1", "before-ack", marker)
    _wait_for(marker.exists, proc, "its 3rd batch")
    _kill(proc)
    assert len(_lines(out)) == 150
    marker.unlink()

    # 2. Another consumer takes over c1's pending batch (all already on disk), goes on, and
    #    is killed half-way through a line.
    _deny(lim, 200, start=600)
    proc = _spawn(redis_url, out, "c2", "torn-line", marker)
    _wait_for(marker.exists, proc, "a torn line")
    _kill(proc)
    assert any(not f.read_bytes().endswith(b"\n") for f in out.rglob("*.jsonl"))
    marker.unlink()

    # 3. One that just runs, killed wherever it happens to be once it has made progress.
    _deny(lim, 400, start=800)
    before = len(_lines(out))
    proc = _spawn(redis_url, out, "c1", "run", marker)
    _wait_for(lambda: len(_lines(out)) > before + 100, proc, "progress")
    _kill(proc)

    # 4. Restarted in this process: it finishes, and every entry is there exactly once.
    _deny(lim, 50, start=1200)
    exporter = AuditExporter(lim, out, projects=["p"], consumer="c1", claim_idle_ms=0)
    exporter.export()
    _check_exactly_once(rclient, out)
    assert exporter.export() == 0  # nothing new: nothing written
    lim.close()


def test_files_per_project_per_day_and_deleted_entries(
    redis_url: str, rclient: Any, tmp_path: Path
) -> None:
    lim = Limiter.from_url(redis_url)
    lim.apply_policy(Policy.from_toml("[projects.p]\nallow_models = []\n[projects.q]\n"))
    _deny(lim, 3)
    exporter = AuditExporter(lim, tmp_path)  # every project with a stored policy
    assert exporter.export() == 5  # p: the policy and 3 denials; q: its policy
    expected = {
        f"{project}/{day_of(i.decode())}.jsonl"
        for project in "pq"
        for i, _ in rclient.xrange(f"prism:{{{project}}}:audit")
    }
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl")} == expected
    _deny(lim, 2, start=3)
    rclient.xdel(KEY, rclient.xrange(KEY)[-1][0])  # deleted before it was exported
    assert exporter.export() == 1
    lim.close()
