"""The demo runs its scenario to the end in worker processes that start together: a normal
feature, a runaway agent against its rate limit, a heavy customer over its split budget until
an override is approved, requests for a denied model. It runs on the URL given, else
PRISM_REDIS_URL, else a private redis-server (kept with --keep), else memory://, and says which;
it never assumes a Redis on localhost:6379."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from _cli import cli
from _readme import ROOT, command_env, console_commands

from prism_limiter import Limiter, Policy
from prism_limiter.cli import _demo
from prism_limiter.cli._demo_scenario import FEATURES, POLICY, features_of
from prism_limiter.engine._devserver import redis_server

AUDIT = "prism:{demo}:audit"
SECTIONS = ("what the workers saw", "budgets", "denials by reason", "the audit trail")


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRISM_REDIS_URL", raising=False)


def _events(rclient: Any) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in rclient.xrange(AUDIT, "-", "+")
    ]


def _calls_per_worker(out: str) -> dict[int, int]:
    """The rows of "what the workers saw": worker, feature, calls, spent, ..."""
    calls: dict[int, int] = {}
    for worker, _, n in re.findall(rf"^ *(\d+) +({'|'.join(FEATURES)}) +(\d+) +\$", out, re.M):
        calls[int(worker)] = calls.get(int(worker), 0) + int(n)
    return calls


@pytest.mark.slow
def test_demo_runs_every_scenario(redis_url: str, rclient: Any) -> None:
    done = cli("demo", url=redis_url, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith(f"using the given URL {_demo._shown(redis_url)}\n"), out
    assert "4 worker processes ready" in out
    assert "\x1b" not in out and "\r" not in out  # not a terminal: nothing redrawn
    assert all(title in out for title in SECTIONS), out

    # every worker made calls
    calls = _calls_per_worker(out)
    assert sorted(calls) == [0, 1, 2, 3] and all(n > 0 for n in calls.values()), out

    # each scenario happened, by the audit trail
    events = _events(rclient)
    kinds = [e["event"] for e in events]
    assert any(e["event"] == "rate.limited" and e["limit"] == "agent-rpm" for e in events)
    assert any(
        e["event"] == "model.denied" and e["model"] == "claude-3-opus-latest" for e in events
    )
    blocked = [e for e in events if e["event"] == "budget.blocked"]
    assert blocked and {(e["budget"], e["split"]) for e in blocked} == {("per-customer", "acme")}
    assert kinds.count("override.granted") == 1
    granted = kinds.index("override.granted")
    assert kinds.index("budget.blocked") < granted  # approved once acme was blocked
    used = [e for e in events[granted:] if e["event"] == "override.used"]
    assert used and {e["split"] for e in used} == {"acme"}
    assert "oncall@example.com approves support@example.com's override for acme" in out

    # every budget within its cap, the override's extra included; nothing left held
    with Limiter.from_url(redis_url) as lim:
        states = lim.status("demo")
    assert {None, "acme"} <= {s.split_value for s in states}
    for s in states:
        assert s.spent_usd <= s.cap_usd, s
        assert s.held_usd == 0, s
        assert s.override_usd == (0.01 if s.split_value == "acme" else 0), s
    assert "every budget stayed within its cap" in out
    settled = re.search(
        r"the workers settled \$([\d.]+) in \d+ calls, the daily budget booked"
        r" \$([\d.]+);",
        out,
    )
    assert settled is not None and settled.group(1) == settled.group(2), out

    # the server outlives the demo: how to read and follow its trail
    assert f"redis-cli -u '{_demo._shown(redis_url)}' XRANGE '{AUDIT}' - +" in out
    assert f"prism-limiter audit tail demo --follow --url '{_demo._shown(redis_url)}'" in out


@pytest.mark.slow
def test_demo_against_a_given_url(
    redis_url: str, rclient: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _demo.run(redis_url, workers=2, seconds=2) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"using the given URL {_demo._shown(redis_url)}\n")
    assert "2 worker processes ready" in out
    assert "every budget stayed within its cap" in out
    assert f"redis-cli -u '{_demo._shown(redis_url)}' XRANGE '{AUDIT}' - +" in out
    assert rclient.xlen(AUDIT) > 0


@pytest.mark.slow
def test_demo_starts_afresh(redis_url: str, rclient: Any) -> None:
    """What an earlier run left (spend, an override, its audit entries) is gone."""
    with Limiter.from_url(redis_url) as lim:
        lim.apply_policy(Policy.from_toml(POLICY), actor="test")
        _demo._approve(lim, "acme")
        assert _demo.run(redis_url, workers=1, seconds=1) == 0
        assert all(s.override_usd == 0 for s in lim.status("demo"))
    kinds = [e["event"] for e in _events(rclient)]
    assert kinds[0] == "policy.applied" and "override.granted" not in kinds


@pytest.mark.slow
def test_demo_uses_prism_redis_url(
    redis_url: str, rclient: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("PRISM_REDIS_URL", redis_url)
    assert _demo.run(None, workers=2, seconds=2) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"using PRISM_REDIS_URL ({_demo._shown(redis_url)})\n")
    assert f"""redis-cli -u "$PRISM_REDIS_URL" XRANGE '{AUDIT}' - +""" in out
    assert "prism-limiter audit tail demo --follow\n" in out  # the URL comes from the variable
    assert rclient.xlen(AUDIT) > 0  # it ran there


@pytest.mark.slow
@pytest.mark.usefixtures("redis_url")  # redis-server is on PATH
def test_demo_starts_a_private_redis_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    real = redis_server

    @contextmanager
    def spy() -> Iterator[str]:
        with real() as url:
            started.append(url)
            yield url

    monkeypatch.setattr(_demo, "redis_server", spy)
    assert _demo.run(None, workers=2, seconds=2) == 0
    out = capsys.readouterr().out
    (url,) = started
    assert not url.endswith(":6379/0")
    assert out.startswith(f"using a private redis-server at {url}, stopped when the demo ends\n")
    assert "redis-cli" not in out and "--follow" not in out  # nothing to read once it is stopped


@pytest.mark.slow
@pytest.mark.usefixtures("redis_url")  # redis-server is on PATH
def test_demo_keeps_its_redis_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert _demo.run(None, workers=1, seconds=1, keep=True) == 0
    out = capsys.readouterr().out
    stop = re.search(r"stop it with:  redis-cli -u (\S+) shutdown nosave && rm -r (\S+)\n", out)
    assert stop is not None, out
    url, home = stop.groups()
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        assert out.startswith(f"using a private redis-server at {url}, kept running (--keep)\n")
        assert not url.endswith(":6379/0")
        assert f"prism-limiter audit tail demo --follow --url '{url}'" in out
        assert client.xlen(AUDIT) > 0  # still there, with the demo's trail
    finally:
        client.shutdown(nosave=True)  # redis-py takes the closed connection as the answer
        client.close()
        shutil.rmtree(home)


def test_demo_embedded_without_redis_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_demo, "redis_server_binary", lambda: None)
    assert _demo.run(None, workers=2, seconds=1) == 0
    out = capsys.readouterr().out
    assert out.startswith("using the embedded memory:// store")
    assert "2 worker threads ready" in out and "redis-cli" not in out


def test_demo_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    assert _demo.run("memory://demo-test", workers=2, seconds=1) == 0
    out = capsys.readouterr().out
    assert all(title in out for title in SECTIONS)
    assert "redis-cli" not in out and "--follow" not in out


def test_every_feature_runs_whatever_the_workers() -> None:
    for workers in (1, 2, 3, 4, 6):
        plan = [features_of(w, workers) for w in range(workers)]
        assert all(plan), workers  # no worker without a feature
        assert {f for fs in plan for f in fs} == set(FEATURES), workers
    assert [features_of(w, 4) for w in range(4)] == [(f,) for f in FEATURES]


def test_demo_options() -> None:
    for bad in (["--seconds", "0"], ["--seconds", "61"], ["--workers", "0"]):
        done = cli("demo", *bad)
        assert done.returncode == 2, bad
        assert "expected" in done.stderr


def test_demo_never_prints_a_password() -> None:
    assert _demo._shown("redis://user:s3cret@db.internal:6380/2") == (
        "redis://user:***@db.internal:6380/2"
    )
    assert _demo._shown("rediss://:s3cret@db.internal/0") == "rediss://:***@db.internal/0"
    assert _demo._shown("redis://127.0.0.1:7000/0") == "redis://127.0.0.1:7000/0"


@pytest.mark.slow
def test_readme_demo_command(redis_url: str, rclient: Any) -> None:
    """`python -m prism_limiter demo` as the README gives it, on the server PRISM_REDIS_URL
    names."""
    (command,) = console_commands("demo")
    assert command == "python -m prism_limiter demo"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=command_env(PRISM_REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=150,
        check=True,
    )
    assert done.stdout.startswith(f"using PRISM_REDIS_URL ({_demo._shown(redis_url)})\n"), (
        done.stdout
    )
    assert "every budget stayed within its cap" in done.stdout
    assert sorted(_calls_per_worker(done.stdout)) == [0, 1, 2, 3]  # the 4 default workers
    assert rclient.xlen(AUDIT) > 0
