"""The README's first screens, run as a reader would: the audit tail loop, the quick start
snippets, the example commands, the make targets, and what it says is (not) audited."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from _helpers import held_nano, spent_nano, wait_until
from _readme import ROOT, command_env, console_commands, readme_block

from prism_limiter import AsyncLimiter, Limiter, Policy
from prism_limiter.engine._devserver import free_port

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
        wait_until(lambda: _blocked_xread(rclient), "the loop to block on XREAD")
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

        wait_until(caught_up, "the loop to catch up")
    finally:
        out, err = _stop(proc)
    expected = b"".join(
        b"\n".join([rid, *(part for kv in fields.items() for part in kv)]) + b"\n"
        for rid, fields in entries
    )
    assert out == expected, err.decode()
    assert newest in out and b"before" not in out


# -- the quick start snippets ------------------------------------------------------------------


class _Completions:
    def create(self, *args: Any, **kwargs: Any) -> Any:
        from openai.types.completion_usage import CompletionUsage

        usage = CompletionUsage(prompt_tokens=1187, completion_tokens=212, total_tokens=1399)
        return type("ChatCompletion", (), {"usage": usage})()


class _AsyncCompletions(_Completions):
    async def create(self, *args: Any, **kwargs: Any) -> Any:
        return _Completions.create(self, *args, **kwargs)


def _client(completions: Any) -> Any:
    chat = type("Chat", (), {"completions": completions})()
    return type("Client", (), {"chat": chat})()


@pytest.fixture
def readme_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snippets run from the root of a checkout (``examples/policy.toml``)."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def redirected(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``from_url`` of both limiters goes to the test server; the URLs asked for are kept."""
    asked: list[str] = []
    for cls in (Limiter, AsyncLimiter):
        real = cls.from_url

        def from_url(_cls: Any, url: str, /, *args: Any, _real: Any = real, **kw: Any) -> Any:
            asked.append(url)
            return _real(redis_url, *args, **kw)

        monkeypatch.setattr(cls, "from_url", classmethod(from_url))
    return asked


@pytest.mark.usefixtures("readme_cwd")
def test_quick_start_snippet_runs(rclient: Any, redirected: list[str]) -> None:
    """The sync snippet, as written, with a stand-in OpenAI client: the policy file loads,
    the reserve is allowed and the settle books the usage."""
    exec(readme_block("quick-start"), {"client": _client(_Completions())})
    assert redirected == ["redis://localhost:6379/0"]  # asked for, never connected to
    assert spent_nano(rclient, "search", "monthly") > 0
    assert held_nano(rclient, "search", "monthly") == 0


@pytest.mark.usefixtures("readme_cwd")
def test_async_quick_start_snippet_runs(rclient: Any, redirected: list[str]) -> None:
    """The async snippet: ``async with limiter.reserve(...) as r`` and ``await r.settle``."""
    namespace: dict[str, Any] = {
        "client": _client(_AsyncCompletions()),
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    exec(readme_block("async-quick-start"), namespace)
    asyncio.run(namespace["main"]())
    assert redirected == ["redis://localhost:6379/0"]
    assert spent_nano(rclient, "search", "monthly") > 0
    assert held_nano(rclient, "search", "monthly") == 0


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


# -- make targets ------------------------------------------------------------------------------


def test_make_demo_and_make_test_run_what_the_readme_says() -> None:
    """`make demo` runs the demo command, `make test` the suite (dry runs: nothing installed)."""
    make = _need("make")
    (demo,) = console_commands("demo")
    dry = {
        target: subprocess.run(
            # -B: as on a fresh checkout, whatever this one has installed already
            [make, "-n", "-B", target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for target in ("demo", "test")
    }
    assert f".venv/bin/{demo}" in dry["demo"]
    assert ".venv/bin/python -m pytest" in dry["test"]
    assert 'pip install -q -e ".[dev]"' in dry["test"]


# -- the example commands ----------------------------------------------------------------------


def _serve(command: str) -> None:
    """Start a server command on a free port, POST one prompt, stop it."""
    _need(command.split(maxsplit=1)[0])
    port = free_port()
    proc = subprocess.Popen(
        [_need("bash"), "-c", f"exec {command} --port {port}"],
        cwd=ROOT,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited: {_stop(proc)[0].decode()}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            except httpx.TransportError:
                return False
            return True

        wait_until(answers, f"{command} to listen")
        ok = httpx.post(f"http://127.0.0.1:{port}/complete", json=PROMPT, timeout=10)
        assert ok.status_code == 200, ok.text
        assert ok.headers["X-Prism-Reservation"]
        refused = httpx.post(
            f"http://127.0.0.1:{port}/complete", json={**PROMPT, "model": "gpt-4o"}, timeout=10
        )
        assert refused.status_code == 403
        assert refused.headers["X-Prism-Reason"] == "model-not-allowed"
    finally:
        _stop(proc)


def test_example_commands_are_the_examples() -> None:
    assert console_commands("run-examples") == [
        "uvicorn examples.fastapi_app:app",
        "flask --app examples.flask_app run",
        "python examples/asyncio_workers.py",
    ]


@pytest.mark.slow
def test_uvicorn_command_serves_the_fastapi_example() -> None:
    """Without PRISM_REDIS_URL it serves on memory:// with its policy: 200, and 403 for a model
    the policy does not allow."""
    _serve(console_commands("run-examples")[0])


@pytest.mark.slow
def test_flask_command_serves_the_flask_example() -> None:
    _serve(console_commands("run-examples")[1])


@pytest.mark.slow
def test_asyncio_workers_command_runs(redis_url: str, rclient: Any) -> None:
    """Embedded by default; on the server PRISM_REDIS_URL names when set."""
    command = console_commands("run-examples")[2]
    for extra in ({}, {"PRISM_REDIS_URL": redis_url}):
        done = subprocess.run(
            [_need("bash"), "-c", command],
            cwd=ROOT,
            env=command_env(**extra),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        last = done.stdout.splitlines()[-1]
        assert last.endswith("before the nightly budget of $0.02 blocked the pool"), done.stdout
        assert int(last.split()[0]) > 0
    assert spent_nano(rclient, "batch", "nightly") > 0  # the second run used the test server


def test_python_is_this_interpreter() -> None:
    """The commands above run `python` and the venv's scripts: this interpreter's."""
    found = shutil.which("python", path=command_env()["PATH"])
    assert found is not None and Path(found).parent == Path(sys.executable).parent
