"""The README's first screens, run as a reader would: the audit tail loop, and what it says
is (not) audited."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest
from _readme import ROOT, command_env, readme_block

from prism_limiter import Limiter, Policy

AUDIT_KEY = "prism:{search}:audit"
PROMPT = {"prompt": "x" * 400}


def _need(tool: str) -> str:
    """The path of ``tool``; a skip without it locally, a failure under CI."""
    path = shutil.which(tool, path=command_env()["PATH"])
    if path is None:
        message = f"{tool} is not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _wait(predicate: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _blocked_xread(rclient: Any) -> bool:
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in rclient.client_list())


def _stop(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """End the process group this test started (a shell and its redis-cli, or a server);
    returns what it printed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return out or b"", err or b""


# -- the audit tail loop -----------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_audit_tail_loop_prints_every_entry_in_order(
    shell: str, redis_url: str, rclient: Any
) -> None:
    """The README's loop, run as it stands by the redis-cli on PATH, keeps following: it prints
    every entry written after it started, in order, values with spaces and newlines included,
    and none written before."""
    _need("redis-cli")
    command = readme_block("audit-tail")
    rclient.xadd(AUDIT_KEY, {"event": "before", "note": "written before the loop started"})
    out, err = b"", b""
    proc = subprocess.Popen(
        [_need(shell), "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=command_env(PRISM_REDIS_URL=redis_url),
        start_new_session=True,
    )
    try:
        _wait(lambda: _blocked_xread(rclient), "the loop to block on XREAD")
        start = rclient.xrange(AUDIT_KEY)[-1][0]
        rclient.xadd(AUDIT_KEY, {"event": "one", "note": "a value with spaces"})
        rclient.xadd(AUDIT_KEY, {"event": "two", "note": "two\nlines", "more": "tab\there"})
        with Limiter.from_url(redis_url) as lim:  # real entries: a policy change, denials
            lim.apply_policy(Policy.from_toml('[projects.search]\nallow_models = ["gpt-4o-mini"]'))
            lim.try_reserve("search", "gpt-4o", est_tokens=10, tags={"team": "a b"})
            lim.try_reserve("search", "claude-3-opus", est_tokens=10)
        rclient.xadd(AUDIT_KEY, {"event": "last", "looks like an id": "1-1\n2-2"})
        entries = rclient.xrange(AUDIT_KEY, min=f"({start.decode()}")
        assert len(entries) == 6
        newest = entries[-1][0]

        def caught_up() -> bool:  # blocked again once the newest entry existed: it read it
            if proc.poll() is not None:
                raise AssertionError(f"the loop ended after one reply: {_stop(proc)}")
            return _blocked_xread(rclient)

        _wait(caught_up, "the loop to catch up")
    finally:
        out, err = _stop(proc)
    expected = b"".join(
        b"\n".join([rid, *(part for kv in fields.items() for part in kv)]) + b"\n"
        for rid, fields in entries
    )
    assert out == expected, err.decode()
    assert newest in out and b"before" not in out


# -- what is audited ---------------------------------------------------------------------------


def test_allowed_requests_are_not_audited_denials_are(redis_url: str, rclient: Any) -> None:
    """'What is audited': an allowed reserve settled or released writes no entry; the usage
    counters hold it. A denial writes one."""
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.load(ROOT / "examples" / "policy.toml"))
        before = rclient.xlen(AUDIT_KEY)
        with lim.reserve("search", "gpt-4o-mini", est_tokens=100, max_output_tokens=50) as r:
            r.settle(input_tokens=90, output_tokens=40)
        lim.reserve("search", "gpt-4o-mini", est_tokens=100).release()
        assert rclient.xlen(AUDIT_KEY) == before
        assert lim.usage("search").total.requests == 1  # the settled one; a release books 0
        assert not lim.try_reserve("search", "gpt-4o", est_tokens=10).allowed
        assert rclient.xlen(AUDIT_KEY) == before + 1
