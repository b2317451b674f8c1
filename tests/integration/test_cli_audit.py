"""``audit tail`` (history, filters, --follow without gaps) and ``audit export`` by time."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _cli import ROOT, cli, env
from _helpers import audit

from prism_limiter import Limiter, Policy

pytestmark = pytest.mark.usefixtures("rclient")

DOC = """
[projects.search]
allow_models = ["gpt-4o-mini"]

[[projects.search.budgets]]
id = "monthly"
usd = 10.0

[projects.other]
allow_models = ["gpt-4o-mini"]
"""


@pytest.fixture
def lim(redis_url: str) -> Any:
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(DOC), actor="alice")
        yield lim


def _grant(lim: Limiter, n: int, project: str = "search") -> None:
    for i in range(n):
        if project == "search":
            lim.grant_override(
                "search",
                "monthly",
                usd=1,
                ttl_s=60,
                requested_by="alice",
                approved_by="cfo",
                reason=f"r{i}",
            )
        else:  # model.denied, a different model each time (identical floods share an entry)
            lim.try_reserve(project, ("gpt-4o", "gpt-4.1", "o3")[i % 3], est_tokens=10)


def _stream_order(entry_id: str) -> tuple[int, int]:
    """A stream id's order: milliseconds, then the sequence within them (as numbers: ``-10``
    comes after ``-9``, which a string sort gets wrong when a millisecond holds ten entries)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tail_history_and_filters(redis_url: str, lim: Limiter) -> None:
    _grant(lim, 12)
    _grant(lim, 2, project="other")
    entries = _lines(cli("audit", "tail", "search", "--json", url=redis_url))
    assert len(entries) == 10  # the last 10 by default
    assert entries[-1]["reason"] == "r11" and entries[-1]["project"] == "search"
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, key=_stream_order)
    entries = _lines(cli("audit", "tail", "--all", "-n", "100", "--json", url=redis_url))
    # two policy.applied, 12 grants (each of the last 11 replacing one: override.revoked), 2 denials
    assert len(entries) == 2 + 12 + 11 + 2
    assert {e["project"] for e in entries} == {"search", "other"}
    denied = _lines(cli("audit", "tail", "--all", "-e", "model.*", "--json", url=redis_url))
    assert [e["event"] for e in denied] == ["model.denied", "model.denied"]
    both = _lines(
        cli(
            "audit",
            "tail",
            "--all",
            "-e",
            "policy.applied",
            "model.denied",
            "--json",
            "-n",
            "100",
            url=redis_url,
        )
    )
    assert len(both) == 4
    pretty = cli("audit", "tail", "search", "-n", "1", url=redis_url)
    assert (
        " search override.granted " in pretty.stdout and "amount_usd=1.000000000" in pretty.stdout
    )
    assert "approved_by=cfo" in pretty.stdout and "reason=r11" in pretty.stdout
    since = _lines(cli("audit", "tail", "search", "--since", "10m", "--json", url=redis_url))
    assert len(since) == 24  # everything of the last ten minutes, not just the last 10
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _lines(cli("audit", "tail", "search", "--since", future, "--json", url=redis_url)) == []


def test_tail_needs_a_project_or_all(redis_url: str) -> None:
    assert cli("audit", "tail", url=redis_url).returncode == 2
    assert cli("audit", "tail", "search", "--all", url=redis_url).returncode == 2


class Follower:
    """``audit tail --follow --json`` in the background, its lines in a queue."""

    def __init__(self, url: str, *args: str) -> None:
        command = [
            sys.executable,
            "-m",
            "prism_limiter",
            "audit",
            "tail",
            "--follow",
            "--json",
            *args,
            "--url",
            url,
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(),
            cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def take(self, n: int, timeout: float = 30) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(out)} of {n} lines"
            out.append(json.loads(self.lines.get(timeout=left)))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(10)  # it reads to the end of the output, then stops
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_follow_misses_nothing(redis_url: str, rclient: Any, lim: Limiter) -> None:
    _grant(lim, 1)  # the history the follower prints first: once it has, it is reading
    follower = Follower(redis_url, "search", "-n", "1", "-e", "override.granted")
    try:
        [first] = follower.take(1)
        assert first["event"] == "override.granted"
        for burst in range(5):  # bursts that land between reads and during them
            _grant(lim, 40)
            if burst % 2:
                time.sleep(0.3)
        got = follower.take(200)
    finally:
        follower.stop()
    stored = [e for e in audit(rclient, "search") if e["event"] == "override.granted"][1:]
    assert [g["reason"] for g in got] == [s["reason"] for s in stored]
    ids = [g["id"] for g in got]
    assert ids == sorted(ids, key=_stream_order) and len(set(ids)) == 200


def test_follow_all_picks_up_every_project(redis_url: str, lim: Limiter) -> None:
    follower = Follower(redis_url, "--all", "-n", "0", "-e", "override.granted", "model.denied")
    try:
        time.sleep(1.5)  # let it start reading
        _grant(lim, 3)
        _grant(lim, 2, project="other")
        got = follower.take(5)
    finally:
        follower.stop()
    assert sorted(g["project"] for g in got) == ["other", "other", "search", "search", "search"]


def test_export_by_time(redis_url: str, lim: Limiter, tmp_path: Any) -> None:
    _grant(lim, 3)
    today = datetime.now(UTC).date()
    done = cli(
        "audit",
        "export",
        "search",
        "--from",
        today.isoformat(),
        "--to",
        today.isoformat(),
        url=redis_url,
    )
    entries = _lines(done)
    granted, replaced = "override.granted", "override.revoked"  # each new grant replaces one
    assert [e["event"] for e in entries] == ["policy.applied", granted] + [replaced, granted] * 2
    target = tmp_path / "audit.jsonl"
    done = cli(
        "audit",
        "export",
        "search",
        "--from",
        today.isoformat(),
        "--to",
        today.isoformat(),
        "-e",
        "override.*",
        "-o",
        str(target),
        url=redis_url,
    )
    assert done.returncode == 0 and done.stdout == ""
    assert len(target.read_text().splitlines()) == 5  # 3 granted, 2 replaced
    yesterday = (today - timedelta(days=1)).isoformat()
    assert (
        _lines(
            cli("audit", "export", "search", "--from", yesterday, "--to", yesterday, url=redis_url)
        )
        == []
    )
    assert (
        cli(
            "audit",
            "export",
            "search",
            "--from",
            today.isoformat(),
            "--to",
            yesterday,
            url=redis_url,
        ).returncode
        == 2
    )


def test_verify_passes_then_names_an_edited_and_a_deleted_entry(
    redis_url: str, rclient: Any, lim: Limiter, tmp_path: Any
) -> None:
    """audit verify: exit 0 on an intact stream (storing the checkpoint), 1 naming the entry
    after a deliberate edit, and after a deliberate delete."""
    _grant(lim, 3)
    checkpoint = tmp_path / "checkpoint.json"
    ok = cli("audit", "verify", "search", "--checkpoint", str(checkpoint), url=redis_url)
    assert ok.returncode == 0, ok.stderr
    assert "entries verified" in ok.stdout and json.loads(checkpoint.read_text())["seq"] >= 1
    key = "prism:{search}:audit"
    entries = rclient.xrange(key)
    victim_id = entries[2][0]
    rclient.delete(key)  # rebuild the stream with one value changed: the same ids
    for entry_id, fields in entries:
        forged = {**fields, b"reason": b"forged"} if entry_id == victim_id else fields
        rclient.xadd(key, forged, id=entry_id)
    edited = cli("audit", "verify", "search", "--json", url=redis_url)
    assert edited.returncode == 1
    assert json.loads(edited.stdout)["bad_id"] == victim_id.decode()
    rclient.delete(key)
    for entry_id, fields in entries:
        if entry_id != victim_id:
            rclient.xadd(key, fields, id=entry_id)
    deleted = cli("audit", "verify", "search", url=redis_url)
    assert deleted.returncode == 1 and "missing" in deleted.stdout


def test_export_follow_writes_every_entry_once(redis_url: str, lim: Limiter, tmp_path: Any) -> None:
    """audit export --follow DIR keeps exporting until stopped; each entry lands once."""
    _grant(lim, 4)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prism_limiter",
            "audit",
            "export",
            "search",
            "--follow",
            str(tmp_path),
            "--url",
            redis_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    try:
        day_file = tmp_path / "search" / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
        deadline = time.monotonic() + 60
        expected = len(lim.client.xrange(lim.audit_key("search")))
        while not (day_file.exists() and len(day_file.read_text().splitlines()) >= expected):
            assert time.monotonic() < deadline, "the exporter wrote too little"
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    ids = [json.loads(line)["id"] for line in day_file.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == expected
    assert proc.returncode == 0 and "entries exported" in err
