"""Every console script under every fault that applies to it, table-driven as SQLite's I/O-error
tests: a missing input, each input kind damaged three ways (zero bytes, cut in half, another
format), an output folder that cannot be written, a file-size limit (``ulimit -f``) over an
earlier output, the output given as one of the inputs, Ctrl-C while the result is being
committed, and SIGKILL at that moment followed by a rerun.

For each case: the exit status is the one of the project's table (``lcoan.errors``), stderr holds
no traceback and exactly one ``error:`` line (``interrupted`` for Ctrl-C), the earlier output is
byte-identical, every input is untouched and the output folder holds no stray temporary file.

Speed: a tool pays ~6 s to import torch here, so each case runs in a process forked from a
"zygote" that imported the heavy libraries once, then runs the script's entry point as the
installed console script does (``sys.exit(main())``). The child is a real process: its own exit
status, file-size limit and signals. Every case runs once, in parallel, in a module fixture; the
tests only read its results.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from lcoan import errors

# --------------------------------------------------------------------------- the zygote
# Started once per worker; for each request it forks a child that runs one console script.
ZYGOTE = r'''
import json, os, resource, select, signal, sys, time, traceback
import numpy, torch, onnx, onnxruntime, PIL.Image, safetensors.torch  # what every tool imports
try:
    import av  # noqa: F401 - the app's
except ImportError:
    pass
import importlib
for _target in json.loads(sys.argv[1]):  # each tool's own modules, imported once for all its cases
    importlib.import_module(_target.partition(":")[0])
torch.set_num_threads(1)  # cases run side by side on few cores


def hook(sig, folder):
    """Send ``sig`` to this process as it is about to rename a file into ``folder``: the moment
    an atomic write commits (a Ctrl-C or a kill -9 there is the worst case for an output)."""
    real = {"replace": os.replace, "rename": os.rename}

    def wrap(name):
        def renamer(src, dst, *args, **kwargs):
            if os.path.abspath(os.fspath(dst)).startswith(folder + os.sep):
                os.kill(os.getpid(), sig)
            return real[name](src, dst, *args, **kwargs)
        return renamer
    os.replace, os.rename = wrap("replace"), wrap("rename")


def child(req, out_fd, err_fd):
    code = 1
    try:
        os.chdir(req["cwd"])
        os.dup2(out_fd, 1)  # pipes: a file-size limit applies to files, and must not cut stderr
        os.dup2(err_fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        if req["fsize"] is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], resource.RLIM_INFINITY))
        if req["hook"]:
            # a suite started as a background job inherits SIGINT ignored, which would make the
            # Ctrl-C case test nothing: the tool gets Python's own handler, as in a terminal
            signal.signal(signal.SIGINT, signal.default_int_handler)
            hook(getattr(signal, req["hook"]), req["hook_dir"])
        module, _, attr = req["target"].partition(":")
        sys.argv = [req["script"], *req["args"]]
        main = getattr(__import__(module, fromlist=[attr]), attr)
        sys.exit(main())  # what the installed console script runs
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(req):
    """Fork the child, collect its output until it exits (or is killed at the deadline)."""
    pipes = [os.pipe(), os.pipe()]
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(req, pipes[0][1], pipes[1][1])
    for _, w in pipes:
        os.close(w)
    texts, readers = {r: b"" for r, _ in pipes}, [r for r, _ in pipes]
    deadline, status = time.monotonic() + req["timeout"], None
    while readers:
        for r in select.select(readers, [], [], 0.05)[0]:
            data = os.read(r, 65536)
            texts[r] += data
            if not data:
                readers.remove(r)
                os.close(r)
        if status is None and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            status = "timeout"
    _, st, usage = os.wait4(pid, 0)
    status = status or os.waitstatus_to_exitcode(st)
    return {"code": status, "cpu_s": usage.ru_utime + usage.ru_stime, "stdout": texts[pipes[0][0]].decode(errors="replace"),
            "stderr": texts[pipes[1][0]].decode(errors="replace")}


for line in sys.stdin:
    print(json.dumps(serve(json.loads(line))), flush=True)
'''


class Zygote:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
               "LCOAN_CACHE": str(REPO / ".pytest_cache" / "lcoan")}
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, json.dumps(list(SCRIPTS.values()))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, env=env)
        self.cpu_s = 0.0  # CPU seconds of its cases, for the timings

    def run(self, script, args, cwd, fsize=None, hook=None, hook_dir=None, timeout=120):
        """Run console script ``script`` with ``args``; returns (status, stdout, stderr)."""
        req = {"script": script, "target": SCRIPTS[script], "args": [str(a) for a in args], "cwd": str(cwd),
               "fsize": fsize, "hook": hook, "hook_dir": str(hook_dir) if hook_dir else None, "timeout": timeout}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the zygote died"
        reply = json.loads(reply)
        self.cpu_s += reply["cpu_s"]
        return reply["code"], reply["stdout"], reply["stderr"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --------------------------------------------------------------------------- the table
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
UNWRITABLE = Path("/sys")  # sysfs refuses new files to everyone, root included (chmod does not stop root)
DAMAGES = ("zero-byte", "truncated", "not-that-format")
FAULTS = ("missing", "damaged", "unwritable", "file-size", "own-input", "sigint", "sigkill")
TRAIN_SETS = ("data.root={data}", "data.train=[imgs]", "data.val=null", "data.patch=16", "data.workers=0",
              "train.out={out}", "train.steps=1", "train.batch_size=2", "train.ckpt_every=1", "train.threads=1")


@dataclass(frozen=True)
class Tool:
    """The cheapest good command line of a console script: ``args`` with ``{name}`` for each input
    of ``reads`` (name -> fixture file or folder; a folder is damaged in its first file) and
    ``{out}`` for its output (a folder, or a file under ``out/``)."""
    args: str
    reads: dict
    out: str = "out"
    product: str = ""              # a file the good run writes, relative to the case folder
    keeps_earlier: bool = True     # an earlier output is put in place first (train refuses a used folder)
    fsize: int = 4096              # ulimit -f for the file-size case: below the product's size
    needs: str = ""                # a module the tool needs to run at all


TOOLS = {
    "lcoan-upscale": Tool("{image} -o {out} --weights {weights} --no-progress",
                          {"image": "a.png", "weights": "w.safetensors"}, product="out/a_x2.png", fsize=1024),
    "lcoan-export-onnx": Tool("--weights {weights} --out {out}", {"weights": "w.safetensors"},
                              out="out/g.onnx", product="out/g.onnx"),
    "lcoan-calib": Tool("--onnx {onnx} --images {images} --out {out} --num 2 --tile 16x16 --no-progress",
                        {"onnx": "g.onnx", "images": "imgs"}, out="out/q.onnx", product="out/q.onnx"),
    "lcoan-parity": Tool("--onnx {onnx} --weights {weights} --images {images} --json {out} --no-progress",
                         {"onnx": "g.onnx", "weights": "w.safetensors", "images": "imgs"},
                         out="out/p.json", product="out/p.json", fsize=512),
    "lcoan-build-engine": Tool("--onnx {onnx} --out {out} --min 1x3x16x16 --opt 1x3x16x16 --max 1x3x16x16 "
                               "--opt-level 0", {"onnx": "g.onnx"}, out="out/g.engine", product="out/g.engine",
                               needs="tensorrt_rtx"),
    "lcoan-triton-repo": Tool("--onnx {onnx} --out {out} --min-hw 16x16 --opt-hw 16x16 --max-hw 16x16 "
                              "--max-batch 1 --opt-level 0 --force", {"onnx": "g.onnx"}, out="out/repo",
                              product="out/repo/lcoan/config.pbtxt", needs="tensorrt_rtx"),
    "lcoan-app": Tool("{image} -o {out} --backend torch --model {weights} --quiet",
                      {"image": "a.png", "weights": "w.safetensors"}, out="out/b.png", product="out/b.png",
                      fsize=1024),
    "lcoan-evaluate": Tool("--weights {weights} --data {data} --sets S --json {out} --no-progress",
                           {"weights": "w.safetensors", "data": "bench"}, out="out/e.json", product="out/e.json",
                           fsize=512),
    "lcoan-train": Tool("--config {config} " + " ".join(f"--set {s}" for s in TRAIN_SETS),
                        {"config": "train.yaml", "data": "data"}, product="out/last.pt", keeps_earlier=False,
                        fsize=20_000),
    "lcoan-build-plugins": Tool("--harness-only --tensorrt-root {trtroot} --build-dir {out}", {"trtroot": "trt"}),
    "lcoan-doctor": Tool("", {}),
}

# Input kinds: what "another format" means for each (the bytes of a file of another kind).
KIND_OF = {"weights": "weights", "onnx": "onnx", "images": "image", "image": "image", "data": "image",
           "config": "config"}
NOT_THAT_FORMAT = {"weights": b"\x89PNG\r\n\x1a\n not weights", "onnx": b"{\"not\": \"an ONNX graph\"}\n",
                   "image": b"PK\x03\x04 not an image", "config": b"\x00\x01\x02 binary, not YAML \xff\xfe"}

# (tool, fault) pairs that cannot apply, and why; "*" for every fault of a tool.
NOT_APPLICABLE = {
    ("lcoan-doctor", "*"): "reads no file and writes only to stdout (its --json too)",
    ("lcoan-build-plugins", "damaged"): "its inputs are the CUDA/C++ sources of the repository and a TensorRT "
                                        "root of headers; nvcc and cmake report their damage",
    ("lcoan-build-plugins", "file-size"): "cmake and nvcc write the build folder: a compile of minutes, "
                                          "outside this file's time budget",
    ("lcoan-build-plugins", "own-input"): "writes only a build folder of new names (no output names an input)",
    ("lcoan-build-plugins", "sigint"): "a compile of minutes; cmake's own Ctrl-C",
    ("lcoan-build-plugins", "sigkill"): "a compile of minutes; cmake rebuilds what a kill left",
    ("lcoan-train", "own-input"): "writes a run folder of its own names and refuses a folder holding a run "
                                  "(tests/test_robustness_train.py::test_fresh_run_never_replaces_an_earlier_run_or_its_init)",
    ("lcoan-train", "damaged:config:truncated"): "YAML cut anywhere is YAML, or the not-that-format case",
    ("lcoan-train", "damaged:data:truncated"): "the one image loader (lcoan.data.imageio): its three damages are "
                                               "upscale's, calib's and parity's rows; a training run each is over budget",
    ("lcoan-train", "damaged:data:not-that-format"): "as damaged:data:truncated",
    ("lcoan-train", "file-size"): "a checkpoint under ulimit -f: tests/test_robustness_train.py::"
                                  "test_full_disk_is_one_line_naming_the_file (slow)",
}


@dataclass(frozen=True)
class Case:
    tool: str
    fault: str                 # one of FAULTS
    read: str = ""             # the input it damages (damaged)
    damage: str = ""           # one of DAMAGES (damaged)

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.tool, self.fault, self.read, self.damage) if p)

    @property
    def key(self) -> str:
        return ":".join(p for p in (self.fault, self.read, self.damage) if p)


def expected(case: Case) -> int:
    """The exit status the table asks for."""
    if case.fault == "sigint":
        return errors.EXIT_INTERRUPTED
    if case.fault == "sigkill":
        return -signal.SIGKILL
    if case.fault == "damaged" and KIND_OF[case.read] == "image" and case.tool != "lcoan-train":
        # an image that cannot be read is skipped and named; the run fails its check (the app:
        # its output is short of that frame). Training data: two images fill the batch exactly,
        # so one unreadable image is a user error.
        return errors.EXIT_DAMAGED if case.tool == "lcoan-app" else errors.EXIT_FAILED
    if case.fault == "file-size" and case.tool in ("lcoan-train", "lcoan-upscale"):
        return errors.EXIT_FAILED  # the run itself happened: train's checkpoint, upscale's image
    if case.fault == "own-input" and case.tool == "lcoan-upscale":
        return errors.EXIT_FAILED  # per image: that image is skipped
    return errors.EXIT_USAGE


def all_cases() -> list[Case]:
    cases = []
    for tool, spec in TOOLS.items():
        for fault in FAULTS:
            if fault == "damaged":
                cases += [Case(tool, fault, read, d) for read in spec.reads for d in DAMAGES] or [Case(tool, fault)]
            else:
                cases.append(Case(tool, fault))
    return cases


def reason_not_applicable(case: Case) -> str | None:
    for key in (case.key, case.fault, "*"):
        if (case.tool, key) in NOT_APPLICABLE:
            return NOT_APPLICABLE[case.tool, key]
    return None


# Where a tool is not yet what the table asks (owned elsewhere): the row stays a real assertion.
XFAIL: dict[str, str] = {}


# --------------------------------------------------------------------------- running the cases
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def is_temporary(name: str) -> bool:
    """A name a writer uses on the way to its final file: safeio's ``.<name>.<random>.tmp<suffix>``,
    a bare ``<name>.tmp``, or any other hidden file."""
    return any(part.startswith(".") or part.endswith(".tmp") or ".tmp." in part for part in Path(name).parts)


def _first_file(path: Path) -> Path:
    return path if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[0]


def damage(path: Path, how: str, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"zero-byte": b"", "truncated": data[: len(data) // 2],
                      "not-that-format": NOT_THAT_FORMAT[kind]}[how])


def make_fixtures(root: Path) -> Path:
    """The inputs every case copies: tiny-preset weights and their graph, 16x16 images, a one-set
    benchmark, a training recipe and its images, an empty TensorRT root."""
    from PIL import Image
    from lcoan import build_model
    from lcoan.checkpoint import save_safetensors
    fx = root / "fixtures"
    rng = np.random.default_rng(0)

    def png(path: Path, size: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    png(fx / "a.png", 16)
    for name in ("a.png", "b.png"):
        png(fx / "imgs" / name, 16)
        png(fx / "bench" / "S" / "HR" / name, 32)
        png(fx / "data" / "imgs" / name, 32)
    from export.to_onnx import export_onnx
    model = build_model("tiny", scale=2).eval()
    save_safetensors(model, fx / "w.safetensors")
    export_onnx(model, fx / "g.onnx")
    shutil.copy(REPO / "configs" / "tiny_x2_291.yaml", fx / "train.yaml")
    (fx / "trt").mkdir()
    return fx


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)


@dataclass
class Outcome:
    code: object
    stderr: str
    inputs_kept: bool
    out_before: dict
    out_after: dict
    named: str = ""                   # the file the one line should name
    rerun: tuple | None = None        # (status, stderr, out snapshot) of the run after a kill
    seconds: float = 0.0
    cpu_s: float = 0.0


class Runner:
    """The fixtures, a pool of zygotes, and one case folder per run."""

    def __init__(self, root: Path, workers: int):
        self.pool = [Zygote() for _ in range(workers)]  # they import while the fixtures are made
        self.root, self.fx = root, make_fixtures(root)
        self.free = list(self.pool)
        self.lock = threading.Condition()

    def zygote(self):
        with self.lock:
            self.lock.wait_for(lambda: self.free)
            return self.free.pop()

    def release(self, z) -> None:
        with self.lock:
            self.free.append(z)
            self.lock.notify()

    def map(self, fn, items) -> list:
        with ThreadPoolExecutor(len(self.pool)) as ex:
            return list(ex.map(fn, items))

    def run(self, case: Case) -> Outcome:
        spec = TOOLS[case.tool]
        folder = self.root / case.id
        paths = {}
        for name, fixture in spec.reads.items():
            paths[name] = folder / "in" / fixture
            _copy(self.fx / fixture, paths[name])
        out = folder / spec.out
        base = self.root / Case(case.tool, "sigkill").id / "out"
        if spec.keeps_earlier and case.fault != "sigkill" and base.is_dir():
            _copy(base, folder / "out")
        (folder / "out").mkdir(parents=True, exist_ok=True)
        fsize = hook = named = None
        if case.fault == "missing":
            first = paths[next(iter(spec.reads))]
            named = first.name
            shutil.rmtree(first) if first.is_dir() else first.unlink()
        elif case.fault == "damaged":
            target = _first_file(paths[case.read])
            named = target.name
            damage(target, case.damage, KIND_OF[case.read])
        elif case.fault == "unwritable":
            out = UNWRITABLE / Path(spec.out).name
        elif case.fault == "file-size":
            fsize = spec.fsize
        elif case.fault == "own-input":
            first = _first_file(paths[next(iter(spec.reads))])
            named = first.name
            if spec.product and spec.out == "out":  # a folder output: its file is a hard link to the input
                (folder / spec.product).unlink(missing_ok=True)
                os.link(first, folder / spec.product)
            else:
                out = first
        elif case.fault in ("sigint", "sigkill"):
            hook = case.fault.upper()
        args = [tok.format(out=out, **paths) for tok in spec.args.split()]
        inputs_before, out_before = snapshot(folder / "in"), snapshot(folder / "out")
        z = self.zygote()
        try:
            t0, cpu0 = time.monotonic(), z.cpu_s
            code, _, err = z.run(case.tool, args, folder, fsize=fsize, hook=hook, hook_dir=folder / "out")
            result = Outcome(code, err, snapshot(folder / "in") == inputs_before, out_before,
                             snapshot(folder / "out"), named or "")
            if case.fault == "sigkill":
                code2, _, err2 = z.run(case.tool, args, folder)
                result.rerun = (code2, err2, snapshot(folder / "out"))
            result.seconds = time.monotonic() - t0
            result.cpu_s = z.cpu_s - cpu0
        finally:
            self.release(z)
        return result

    def close(self) -> None:
        for z in self.pool:
            z.close()


def _available(tool: str) -> str | None:
    import importlib.util
    need = TOOLS[tool].needs
    return None if not need or importlib.util.find_spec(need) else f"{need} is not installed"


def good_case(tool: str) -> Case | None:
    """The case whose rerun is ``tool``'s good run (None: the tool has no such run here)."""
    case = Case(tool, "sigkill")
    return None if reason_not_applicable(case) or not TOOLS[tool].product else case


def _params():
    out = []
    for case in all_cases():
        marks = []
        reason = reason_not_applicable(case)
        if reason:
            marks.append(pytest.mark.skip(reason=f"does not apply: {reason}"))
        elif case.id in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[case.id]))
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """Every selected case, run once, in parallel. The SIGKILL cases go first: their reruns are
    each tool's good run, whose output is the earlier output of the other cases."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)
              and not item.get_closest_marker("skip")]
    runner = Runner(tmp_path_factory.mktemp("faults"), workers=int(os.environ.get("LCOAN_FAULT_WORKERS", "3")))
    wanted = [c for c in wanted if not _available(c.tool)]
    goods = [good_case(t) for t in TOOLS if not _available(t) and good_case(t)]
    # longest first, for the packing: full runs (Ctrl-C, training) before the early refusals
    rest = sorted((c for c in wanted if c not in goods),
                  key=lambda c: (c.fault not in ("sigint", "file-size"), c.tool != "lcoan-train"))
    results: dict[str, Outcome] = {}
    try:
        for batch in (goods, rest):
            for case, res in zip(batch, runner.map(runner.run, batch)):
                results[case.id] = res
    finally:
        runner.close()
    if os.environ.get("LCOAN_FAULT_TIMES"):
        Path(os.environ["LCOAN_FAULT_TIMES"]).write_text(json.dumps(
            {k: [v.code, round(v.seconds, 2), round(v.cpu_s, 2), v.stderr[-400:]] for k, v in results.items()},
            indent=1))
    return results


# --------------------------------------------------------------------------- the tests
ERROR_LINE = re.compile(r"^(\S+: )?error:", re.M)


def test_every_console_script_is_in_the_table():
    assert set(TOOLS) == set(SCRIPTS), "add the new tool's cheapest command line to TOOLS"


def test_every_fault_has_a_case_or_a_reason():
    reasons = {(c.tool, c.fault) for c in all_cases() if reason_not_applicable(c)}
    for tool in TOOLS:
        for fault in FAULTS:
            cases = [c for c in all_cases() if (c.tool, c.fault) == (tool, fault)]
            assert cases or (tool, fault) in reasons, (tool, fault)
    for key in NOT_APPLICABLE:  # no reason for a case that is not in the table
        assert any(c.tool == key[0] and key[1] in ("*", c.fault, c.key) for c in all_cases()), key
    for name in XFAIL:
        assert name in {c.id for c in all_cases()}, name


def _check_lines(res: Outcome, code: int) -> None:
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = ERROR_LINE.findall(res.stderr)
    if code in (errors.EXIT_OK, errors.EXIT_INTERRUPTED):
        assert not lines, res.stderr
        if code == errors.EXIT_INTERRUPTED:
            assert "interrupted" in res.stderr, res.stderr
    else:
        assert len(lines) == 1, f"{len(lines)} error: lines\n{res.stderr}"


@pytest.mark.parametrize("tool", [t for t in TOOLS if good_case(t)])
def test_good_run(outcomes, tool):
    """The rerun after the kill: the cheapest good command line of the tool works."""
    if _available(tool):
        pytest.skip(_available(tool))
    code, err, after = outcomes[good_case(tool).id].rerun
    assert code == 0, err[-3000:]
    _check_lines(Outcome(code, err, True, {}, after), 0)
    assert Path(TOOLS[tool].product).relative_to("out").as_posix() in after, sorted(after)


@pytest.mark.parametrize("case", _params())
def test_fault(outcomes, case):
    if _available(case.tool):
        pytest.skip(_available(case.tool))
    res = outcomes[case.id]
    want = expected(case)
    assert res.code == want, f"exit status {res.code}, the table says {want}\n{res.stderr[-3000:]}"
    assert res.inputs_kept, "an input was changed"
    if case.fault == "sigkill":
        published = [n for n in res.out_after if not is_temporary(n)]
        assert not published or not TOOLS[case.tool].keeps_earlier, f"a killed run published {published}"
        code, err, after = res.rerun
        assert code == 0, f"rerun after the kill: {code}\n{err[-3000:]}"
        assert not [n for n in after if is_temporary(n)], f"left after the rerun: {sorted(after)}"
        return
    _check_lines(res, want)
    if res.named:
        assert res.named in res.stderr, res.stderr
    stray = [n for n in res.out_after if n not in res.out_before]
    if want == errors.EXIT_FAILED and case.fault == "damaged":  # a result from the readable images
        assert sorted(res.out_after) == sorted(res.out_before), f"new files: {stray}"
    elif TOOLS[case.tool].keeps_earlier:
        assert res.out_after == res.out_before, f"the earlier output changed; new files: {stray}"
    else:
        assert not [n for n in stray if is_temporary(n)], stray


# --------------------------------------------------------------------------- engines
# The engine readers (the app's TensorRT backend, parity --engine, Triton's plan) all load through
# engine.runtime.Engine, which runs engine.cache's file checks before TensorRT or a GPU is needed:
# the damage of the engine kind is checked there, on any machine, in the same table form.
ENGINE_DAMAGES = {
    "zero-byte": lambda e, s: e.write_bytes(b""),
    "truncated": lambda e, s: e.write_bytes(e.read_bytes()[:64]),
    "not-that-format": lambda e, s: e.write_bytes(b"\x89PNG\r\n\x1a\n not an engine"),
    "sidecar missing": lambda e, s: s.unlink(),
    "sidecar not JSON": lambda e, s: s.write_text(s.read_text()[:30]),
    "sidecar of another engine": lambda e, s: s.write_text(s.read_text().replace(
        json.loads(s.read_text())["engine_sha256"], "0" * 64)),
    "another TensorRT": lambda e, s: None,
}


@pytest.mark.parametrize("how", ENGINE_DAMAGES)
def test_engine_loader_names_the_file_in_one_line(tmp_path, how):
    from engine import cache
    from engine.errors import EngineError
    engine = tmp_path / "g.engine"
    engine.write_bytes(bytes(range(256)) * 4)
    key = cache.EngineKey("0" * 64, "tensorrt_rtx 1.7.1", "cpu-build", "fp32", {})
    cache.write_sidecar(engine, key, engine_sha256=cache.sha256_file(engine))
    assert cache.check_loadable(engine, "tensorrt_rtx 1.7.1")["key"]["trt"] == "tensorrt_rtx 1.7.1"
    ENGINE_DAMAGES[how](engine, cache.sidecar_path(engine))
    with pytest.raises(EngineError) as info:
        cache.check_loadable(engine, "tensorrt 10.3.0")
    message = str(info.value)
    assert str(engine) in message and "\n" not in message, message
    assert ("tensorrt_rtx 1.7.1" in message) == (how == "another TensorRT"), message
