"""The Lua scripts: found in the installed package (or the source tree), assembled once.

A script's second header line names the shared libraries it needs (``-- needs: common period``);
they are prepended in that order. Binding to a client goes through redis-py's
``register_script``, which sends EVALSHA and reloads the script on NOSCRIPT.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any

NAMES = (
    "apply_policy",
    "bump_policy",
    "override",
    "release",
    "reserve",
    "settle",
    "status",
    "sweep",
)
_NEEDS = re.compile(r"^-- needs: (.*)$", re.MULTILINE)


def lua_dir() -> Path:
    """``prism_limiter/lua`` in a wheel, else the top-level ``lua/`` of a source checkout."""
    packaged = Path(str(resources.files("prism_limiter"))) / "lua"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "lua"


@functools.cache
def source(name: str) -> str:
    """The full source of one script, libraries included."""
    base = lua_dir()
    body = (base / f"{name}.lua").read_text(encoding="utf-8")
    needs = _NEEDS.search(body)
    libs = needs.group(1).split() if needs else []
    parts = [(base / "lib" / f"{lib}.lua").read_text(encoding="utf-8") for lib in libs]
    return "\n".join([*parts, body])


def register(client: Any) -> dict[str, Any]:
    """Bind every script to a redis-py client (sync, asyncio or cluster): name -> Script."""
    return {name: client.register_script(source(name)) for name in NAMES}
