"""Read the README's tested blocks, so a test runs the very text a reader copies.

A block is marked by ``<!-- test: NAME -->`` on the line before its fence.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_block(name: str) -> str:
    """The text of the fenced block marked ``<!-- test: name -->`` (without the fences)."""
    text = README.read_text(encoding="utf-8")
    marker = f"<!-- test: {name} -->\n"
    assert text.count(marker) == 1, f"README.md must mark exactly one block {name!r}"
    found = re.match(r"```[a-z]*\n(.*?)\n```\n", text.split(marker, 1)[1], re.DOTALL)
    assert found is not None, f"the marker {name!r} must stand right before a fenced block"
    return found.group(1)


def console_commands(name: str) -> list[str]:
    """The ``$ `` lines of a console block, without the prompt."""
    return [line[2:] for line in readme_block(name).splitlines() if line.startswith("$ ")]


def command_env(**extra: str) -> dict[str, str]:
    """The environment a reader's shell has: this checkout's package importable, this venv's
    ``python`` and scripts first on PATH, no ``PRISM_REDIS_URL`` unless given."""
    env = dict(os.environ)
    env.pop("PRISM_REDIS_URL", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env
