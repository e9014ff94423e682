"""The one-way layers of pyproject.toml's [tool.importlinter] contracts, checked with `lint-imports`
over every package of the repository (direct and indirect imports, lazy ones inside functions too).

The second test plants an upward import in a copy of the tree and expects the contracts to break,
so a contract that checks nothing (a wrong package name, an empty layer) fails here too.

The layers say nothing about modules inside one package, so the cycle tests look for circles
between any two modules of the product packages (grimp's import graph, lazy imports included), and
the name test for a module named like a top-level package (``app/pipeline.py`` beside
``pipeline/``).
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
PRODUCT = PACKAGES[:-1]


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
    ("serve/repository.py", "from pipeline import to_trt", "serve is not allowed to import pipeline"),
])
def test_contracts_catch_an_upward_import(tmp_path, module, planted, message):
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    proc = _lint(root)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "BROKEN" in proc.stdout and message in proc.stdout, proc.stdout[-3000:]


def _cycles(graph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def _graph():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (dev extra)")
    return grimp.build_graph(*PRODUCT, cache_dir=None)


@pytest.fixture(scope="module")
def graph():
    return _graph()


def test_no_import_cycles(graph):
    found = [sorted(c) for c in _cycles(graph)]
    assert not found, f"import circles between modules: {found}"


def test_cycle_check_finds_a_planted_cycle():
    graph = _graph()  # a graph of its own: the planted imports must not reach the other tests
    graph.add_import(importer="app.sources", imported="app.gst")
    graph.add_import(importer="app.gst", imported="app.sources")
    assert {"app.sources", "app.gst"} <= set().union(*_cycles(graph))


def test_no_module_named_like_a_package(graph):
    clashes = {m for m in graph.modules if "." in m and m.rsplit(".", 1)[1] in PACKAGES}
    assert not clashes, f"modules named like a top-level package: {sorted(clashes)}"


@pytest.mark.parametrize("alias,target", [("export.to_trt", "pipeline.to_trt"),
                                          ("export.to_triton", "pipeline.to_triton"),
                                          ("export.parity", "verify.parity")])
def test_command_aliases_run_their_target_and_import_nothing_above_export(alias, target):
    """Imported, an alias loads no stage above export; run, it is its target command."""
    code = (f"import sys, {alias}; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pipeline', 'verify', 'engine', 'calib', 'app', 'serve')); print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-1500:]
    helps = [subprocess.run([sys.executable, "-m", m, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60) for m in (alias, target)]
    assert helps[0].returncode == helps[1].returncode == 0, helps[0].stderr[-1500:]
    assert helps[0].stdout == helps[1].stdout and f"usage: python -m {alias}" in helps[0].stdout
