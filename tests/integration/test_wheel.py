"""The built wheel ships the Lua scripts and runs them from the installed package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import sys, prism_limiter
from prism_limiter import Limiter, Policy
from prism_limiter.engine import _scripts
package = __import__("pathlib").Path(prism_limiter.__file__).parent
assert str(_scripts.lua_dir()).startswith(str(package)), (_scripts.lua_dir(), package)
lim = Limiter.from_url(sys.argv[1])
lim.apply_policy(Policy.from_toml("[projects.w]\\nallow_models=['*']\\n"))
with lim.reserve("w", "gpt-4o", est_tokens=10) as r:
    r.settle(input_tokens=10, output_tokens=1)
print("ok", _scripts.lua_dir())
"""


@pytest.mark.slow
def test_wheel_installs_and_loads_its_scripts(tmp_path: Path, redis_url: str) -> None:
    """Build the wheel, install it (without the source tree on the path) and run a reserve."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
    )
    [wheel] = dist.glob("prism_limiter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for script in ("reserve", "settle", "release", "sweep", "status", "apply_policy"):
        assert f"prism_limiter/lua/{script}.lua" in names
    assert "prism_limiter/lua/lib/common.lua" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies come from this interpreter's site-packages; the package itself only
    # from the wheel (the source tree is nowhere on the new venv's path).
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    (target / "deps.pth").write_text(f"{deps}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    out = subprocess.run(
        [str(python), "-I", "-c", CHECK, redis_url],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and str(target) in out.stdout
