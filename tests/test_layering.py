"""The one-way layers of pyproject.toml's [tool.importlinter] contracts, checked with `lint-imports`
over every package of the repository (direct and indirect imports, lazy ones inside functions too).

The second test plants an upward import in a copy of the tree and expects the contracts to break,
so a contract that checks nothing (a wrong package name, an empty layer) fails here too.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")

LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("lcoan", "export", "calib", "engine", "app", "plugins", "serve", "pipeline", "verify", "benchmarks")


def _lint(root: Path) -> subprocess.CompletedProcess:
    # cwd first on sys.path, so the copy is analysed, not the installed packages; no cache files
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_contracts_hold():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout, proc.stdout[-2000:]


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy2(REPO / "pyproject.toml", root)
    for name in PACKAGES:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "build", "*.so",
                                                                                "*.safetensors", "*.o"))
    return root


@pytest.mark.parametrize("module,planted,message", [
    ("export/graph.py", "from engine import cache", "export is not allowed to import engine"),
    ("calib/quantize.py", "from pipeline import to_trt", "calib is not allowed to import pipeline"),
    ("engine/build.py", "import verify.parity", "engine.build -> verify.parity"),
    ("lcoan/opspec.py", "import export", "lcoan is not allowed to import export"),
])
def test_contracts_catch_an_upward_import(tmp_path, module, planted, message):
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    proc = _lint(root)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "BROKEN" in proc.stdout and message in proc.stdout, proc.stdout[-3000:]
