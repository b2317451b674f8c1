"""Run the real command line in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import prism_limiter

ROOT = Path(prism_limiter.__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """This checkout's package first on the path; a wide terminal so tables do not truncate;
    no ``PRISM_REDIS_URL`` from the caller's environment (tests pass ``--url``)."""
    out = {k: v for k, v in os.environ.items() if k != "PRISM_REDIS_URL"}
    out.update(PYTHONPATH=str(ROOT), COLUMNS="200", PYTHONIOENCODING="utf-8")
    return out


def cli(
    *args: str, url: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m prism_limiter ARGS [--url URL]``; never raises on a non-zero exit."""
    command = [sys.executable, "-m", "prism_limiter", *args]
    if url is not None:
        command += ["--url", url]
    return subprocess.run(
        command, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=timeout, check=False
    )
