"""Every command block of README.md and docs/*.md runs verbatim, in the documented order.

The files are parsed when the tests run, so a block added to the docs is covered without touching
this file. Each document gets its own scratch folder that looks like a checkout (the repository's
entries linked in, ``../shared`` beside it, fresh ``out/``, ``runs/``, ``poly/``), and its blocks run
there one after another with ``bash -e`` and the project's venv first on ``PATH``, so a later block
sees what an earlier one wrote, as a reader following the page would.

Markers (HTML comments right above a block's fence) say how a block is run:

* ``<!-- requires: gpu -->``, ``<!-- requires: tensorrt -->`` (NVIDIA TensorRT, not TensorRT-RTX),
  ``<!-- requires: jetson -->``, ``<!-- requires: camera -->``, ``<!-- requires: triton-container -->``:
  skipped with that reason unless the machine has it;
* ``<!-- requires: gstreamer -->``, ``<!-- requires: serve-venv -->``: skipped, with the reason,
  when GStreamer or the Triton venv (``make serve-setup``) is not installed, like the suite's own
  GStreamer and Triton tests, and a failure instead under ``LCOAN_REQUIRE_GST`` /
  ``LCOAN_REQUIRE_TRITON`` (CI);
* ``<!-- not-run: REASON -->``: not run by this test, for the two blocks that cannot be (``make
  test`` is this suite; the manual install makes a new venv from PyPI, which ``make setup`` does);
* ``<!-- run: background PORT [ready URL] -->``: a server; started, polled until URL answers 200
  (Triton: ``/v2/health/ready``, true once every model is loaded) or, without URL, until
  127.0.0.1:PORT accepts connections, with a deadline and never a fixed sleep; left running for the
  document's next blocks, stopped (SIGINT) at the end;
* ``<!-- run: interrupt-after N -->``: a long run (training, a sensitivity ranking): Ctrl-C after N
  seconds; it must exit with 0 or 130 and one line, no traceback (the trainer also names the
  ``--resume`` command);
* ``<!-- slow -->``: marked ``slow`` (still run in CI).

Every fenced block whose lines start like a command (``python -m``, ``make``, ``polygraphy``, ...)
must be a ``bash`` block, so no command escapes this test by its fence.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import required, wait_until

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LCOAN_SHARED", REPO.parent / "shared"))
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
COMMAND = re.compile(r"^\s*(python3? -m |make |polygraphy |trtexec |torchrun |pip |gst-launch|sudo |docker |"
                     r"tritonserver |LD_PRELOAD=|\. \.venv)")
MARKER = re.compile(r"<!--\s*(requires|not-run|run|slow)\s*:?\s*(.*?)\s*-->")
BLOCK_TIMEOUT_S = 900
# A block's requirement -> the component whose LCOAN_REQUIRE_<X> (conftest.required) makes it mandatory.
REQUIRED_BY = {"gstreamer": "gst", "serve-venv": "triton"}
# Repository entries a scratch checkout gets fresh instead of linked: what the docs' commands write.
FRESH = {".git", "out", "runs", "poly", "previews", "triton_repo", "__pycache__", ".pytest_cache"}


@dataclass
class Block:
    doc: Path
    line: int
    text: str
    markers: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def parse(doc: Path) -> tuple[list[Block], list[str]]:
    """The ``bash`` blocks of ``doc`` in order, and the lines of command-like blocks in other fences."""
    lines = doc.read_text().splitlines()
    blocks, stray = [], []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        body = [line[len(m.group(1)):] for line in lines[i + 1:j]]
        if m.group(2) in ("bash", "sh", "shell"):
            markers = {}
            k = i - 1
            while k >= 0 and i - k <= 4 and (not lines[k].strip() or lines[k].lstrip().startswith("<!--")):
                for kind, value in MARKER.findall(lines[k]):  # only the comments right above the fence
                    markers.setdefault(kind, value)
                k -= 1
            blocks.append(Block(doc, i + 1, "\n".join(body) + "\n", markers))
        elif m.group(2) not in ("python", "json", "yaml", "cpp", "c", "cmake", "pbtxt", "protobuf") and \
                any(COMMAND.match(b) for b in body):
            stray.append(f"{doc.relative_to(REPO)}:{i + 1}: a command block in a ```{m.group(2)} fence")
        i = j + 1
    return blocks, stray


def _have_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _have(what: str) -> str | None:
    """None when the machine has ``what``, else why the block is skipped."""
    if what == "gpu":
        return None if _have_gpu() else "needs a CUDA GPU (none here)"
    if what == "tensorrt":
        try:
            import tensorrt  # noqa: F401 - NVIDIA TensorRT itself, not TensorRT-RTX
        except ImportError:
            return "needs NVIDIA TensorRT (only TensorRT-RTX, which cannot run engines without its GPUs, is here)"
        return None if _have_gpu() else "needs TensorRT on a CUDA GPU (none here)"
    if what == "jetson":
        return None if Path("/etc/nv_tegra_release").exists() else "needs a Jetson (JetPack, CSI camera, NVMM)"
    if what == "camera":
        return None if Path("/dev/video0").exists() else "needs a camera (/dev/video0)"
    if what == "triton-container":
        return None if shutil.which("tritonserver") and _have_gpu() else \
            "needs NVIDIA's Triton container on a GPU machine (docker, tritonserver, trtexec)"
    if what == "gstreamer":
        return None if shutil.which("gst-launch-1.0") and subprocess.run(
            [sys.executable, "-c", "import gi; gi.require_version('Gst', '1.0')"], capture_output=True
        ).returncode == 0 else "needs GStreamer 1.x and PyGObject (make setup installs them as root)"
    if what == "serve-venv":
        return None if (REPO / ".venv-serve" / "bin" / ".installed").exists() else \
            "needs the Triton serving venv (make serve-setup)"
    return f"unknown requirement {what!r}"


def scratch_checkout(root: Path) -> Path:
    """A folder that looks like a fresh checkout: entries linked, outputs fresh, ../shared beside it."""
    work = root / "repo"
    work.mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name in FRESH or entry.name.endswith((".onnx", ".engine", ".json")):
            continue
        if entry.name == "pyproject.toml":  # a copy older than the venv stamp: `make` sees setup as done
            shutil.copy2(entry, work / entry.name)
            stamp = REPO / ".venv" / "bin" / ".installed"
            if stamp.exists():
                t = stamp.stat().st_mtime - 1
                os.utime(work / entry.name, (t, t))
            continue
        (work / entry.name).symlink_to(entry)
    (root / "shared").symlink_to(SHARED)
    return work


def _env(work: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(REPO / ".venv")
    env["PYTHONPATH"] = str(work)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["LCOAN_SHARED"] = str(SHARED)
    env.pop("LCOAN_DATA", None)  # the docs say ../shared/data; the scratch checkout has it there
    return env


def _listens(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status while models load
        return False


def run_block(block: Block, work: Path, background: list) -> None:
    script = "set -eo pipefail\n" + block.text
    mode = block.markers.get("run", "")
    env = _env(work)
    if mode.startswith("background"):
        log = work / f"background-{block.line}.log"  # a file, not a pipe: nobody reads a server's log
        with open(log, "w") as fh:
            proc = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        background.append((block, proc))
        port, _, url = mode.split(maxsplit=1)[1].partition(" ready ")
        try:
            wait_until(lambda: _answers(url.strip()) if url else _listens(int(port)), 180,
                       f"{block.id}: {url.strip() or f'127.0.0.1:{port}'}", alive=lambda: proc.poll() is None,
                       poll_s=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
        return
    if mode.startswith("interrupt-after"):
        seconds = float(mode.split()[-1])
        proc = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
            out, _ = proc.communicate(timeout=300)
        assert proc.returncode in (0, 130), f"{block.id}: exit {proc.returncode}\n{out[-4000:]}"
        assert "Traceback" not in out, f"{block.id}:\n{out[-4000:]}"
        if proc.returncode == 130 and "lcoan.train" in block.text:
            assert "--resume" in out, f"{block.id}: no resume hint after Ctrl-C\n{out[-2000:]}"
        return
    proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, (f"{block.id} failed (exit {proc.returncode}):\n{block.text}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")


def _params():
    out = []
    for doc in DOCS:
        blocks, _ = parse(doc)
        marks = [pytest.mark.slow] if any("slow" in b.markers for b in blocks) else []
        out.append(pytest.param(doc, id=str(doc.relative_to(REPO)), marks=marks))
    return out


def test_every_command_block_is_a_bash_block():
    stray = [line for doc in DOCS for line in parse(doc)[1]]
    assert not stray, "\n".join(stray)


def test_markers_are_known():
    known = {"gpu", "tensorrt", "jetson", "camera", "triton-container", "gstreamer", "serve-venv"}
    for doc in DOCS:
        for b in parse(doc)[0]:
            if "requires" in b.markers:
                assert set(b.markers["requires"].replace(",", " ").split()) <= known, b.id
            if "run" in b.markers:
                assert re.fullmatch(r"background \d+( ready https?://\S+)?|interrupt-after \d+", b.markers["run"]), b.id
            if "not-run" in b.markers:
                assert len(b.markers["not-run"]) > 20, f"{b.id}: say why it is not run"


def anchors(doc: Path) -> set[str]:
    """The ``#fragment`` each heading of ``doc`` gets on GitHub: lower case, punctuation but ``-`` and
    ``_`` dropped, spaces to ``-``; a repeated heading gets ``-1``, ``-2``, ... (code fences skipped)."""
    found, seen, fence = set(), {}, False
    for line in doc.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", re.sub(r"<[^>]+>", "", text).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(doc: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every Markdown link or image outside code that is not a URL."""
    out, fence = [], False
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        if fence:
            continue
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                out.append((number, target))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_relative_links_resolve(doc):
    broken = []
    for line, target in relative_links(doc):
        path, _, fragment = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{doc.relative_to(REPO)}:{line}: {target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{doc.relative_to(REPO)}:{line}: {target}: no heading #{fragment} in {dest.name}")
    assert not broken, "\n".join(broken)


def test_anchor_rule_is_githubs():
    """The slugs GitHub gives these headings (checked on github.com), so a wrong rule cannot pass."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "page.md"
        page.write_text("# Robustness: nothing lost, nothing silent\n## The `--sort plugin` graph and TensorRT-RTX\n"
                        "## PyTorch CUDA FP16 (`python3 -m benchmarks.gpu_fps`)\n## Install\n## Install\n"
                        "```bash\n# not a heading\n```\n")
        assert anchors(page) == {"robustness-nothing-lost-nothing-silent", "the---sort-plugin-graph-and-tensorrt-rtx",
                                 "pytorch-cuda-fp16-python3--m-benchmarksgpu_fps", "install", "install-1"}


@pytest.mark.parametrize("doc", _params())
def test_documented_commands_run(doc, tmp_path):
    blocks, _ = parse(doc)
    if not blocks:
        pytest.skip(f"{doc.name} has no command blocks")
    work = scratch_checkout(tmp_path)
    background: list = []
    skipped, ran = [], 0
    try:
        for block in blocks:
            if "not-run" in block.markers:
                skipped.append(f"{block.id}: {block.markers['not-run']}")
                continue
            needs = block.markers.get("requires", "").replace(",", " ").split()
            missing = {w: _have(w) for w in needs}
            reasons = [r for r in missing.values() if r]
            # What CI installs must run there: a missing one fails instead of skipping.
            demanded = [r for w, r in missing.items() if r and w in REQUIRED_BY and required(REQUIRED_BY[w])]
            assert not demanded, f"{block.id}: required by CI but {'; '.join(demanded)}"
            if reasons:
                skipped.append(f"{block.id}: {'; '.join(reasons)}")
                continue
            run_block(block, work, background)
            ran += 1
    finally:
        for block, proc in background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    for line in skipped:
        print(f"not run: {line}")
    if not ran:
        pytest.skip("; ".join(skipped))


def test_ci_fails_instead_of_skipping_what_it_installs(monkeypatch):
    """.ci/run asks for GStreamer and Triton; under those variables a missing component fails."""
    from conftest import REQUIRE_ENV, skip_unless_required
    ci = (REPO / ".ci" / "run").read_text()
    for component, env in REQUIRE_ENV.items():
        assert re.search(rf"^export .*\b{env}=1\b", ci, re.M), f".ci/run does not set {env}=1"
        monkeypatch.setenv(env, "1")
        with pytest.raises(pytest.fail.Exception, match=f"{env} is set but nothing here"):
            skip_unless_required(component, "nothing here")
        monkeypatch.setenv(env, "0")
        with pytest.raises(pytest.skip.Exception, match="nothing here"):
            skip_unless_required(component, "nothing here")
