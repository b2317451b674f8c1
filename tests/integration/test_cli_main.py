"""The command line as a whole: --help everywhere, --version, exit codes, the demo."""

from __future__ import annotations

import argparse

import pytest
from _cli import cli

from prism_limiter import __version__
from prism_limiter.cli import COMMANDS, parser


def _commands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaves() -> list[list[str]]:
    """Every command path (``policy apply``, ``status``, ...) the parser knows."""
    out = []
    for name, p in _commands(parser()).items():
        nested = _commands(p)
        out += [[name, leaf] for leaf in nested] if nested else [[name]]
    return out


def test_top_level_help_lists_every_command_and_the_exit_codes() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for name in COMMANDS:
        assert f"    {name} " in done.stdout
    assert "exit codes:" in done.stdout
    assert "3  Redis unavailable" in done.stdout


def test_every_command_has_help() -> None:
    for path in _leaves():
        done = cli(*path, "--help")
        assert done.returncode == 0, path
        assert done.stdout.startswith("usage: prism-limiter " + " ".join(path)), path


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"prism-limiter {__version__}"


def test_usage_errors_exit_2() -> None:
    assert cli().returncode == 2
    assert cli("no-such-command").returncode == 2
    done = cli("policy", "show", url="ftp://example")
    assert done.returncode == 2
    assert "unsupported URL scheme" in done.stderr


@pytest.mark.slow
def test_demo_runs_embedded() -> None:
    done = cli("demo", "--url", "memory://cli-demo", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "every budget stayed within its cap" in done.stdout
