"""The one CLI error path from the user's side: every console script and ``python -m`` entry turns a
missing input into exactly one ``error:`` line and status 2; the tools' own behaviours on top of it
(the trainer's Ctrl-C and full-disk statuses, the app's exit table, the Triton launcher) hold."""
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO
from lcoan import errors

MISSING = "missing_input"

# Each console script with arguments naming one missing input file (relative to the tmp folder).
SCRIPT_ARGS = {
    "lcoan-train": ["--config", f"{MISSING}.yaml"],
    "lcoan-evaluate": ["--weights", f"{MISSING}.safetensors", "--no-progress"],
    "lcoan-upscale": [f"{MISSING}.png", "-o", "out", "--no-progress"],
    "lcoan-export-onnx": ["--weights", f"{MISSING}.safetensors"],
    "lcoan-calib": ["--onnx", f"{MISSING}.onnx", "--images", "."],
    "lcoan-build-engine": ["--onnx", f"{MISSING}.onnx"],
    "lcoan-parity": ["--onnx", f"{MISSING}.onnx"],
    "lcoan-triton-repo": ["--onnx", f"{MISSING}.onnx", "--out", "repo"],
    "lcoan-app": [f"{MISSING}.mp4", "-o", "out.mp4"],
    "lcoan-build-plugins": ["--tensorrt-root", MISSING],
}
# Scripts with no input file to be missing, each with the reason.
NO_INPUT = {"lcoan-doctor": "reads no file: it asks the installed packages, the driver and the GPU"}


def _scripts() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_every_console_script_has_a_missing_input_case():
    assert set(_scripts()) == set(SCRIPT_ARGS) | set(NO_INPUT)
    assert not set(SCRIPT_ARGS) & set(NO_INPUT)


@pytest.mark.parametrize("name", sorted(SCRIPT_ARGS))
def test_console_script_missing_input_is_one_line(name, tmp_path, monkeypatch, capsys):
    """What the installed script runs: ``sys.exit(<target>())`` with the arguments in ``sys.argv``."""
    module, _, attr = _scripts()[name].partition(":")
    target = getattr(importlib.import_module(module), attr)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [name, *SCRIPT_ARGS[name]])
    with pytest.raises(SystemExit) as info:
        sys.exit(target())
    line = _one_error_line(capsys.readouterr().err)
    assert info.value.code == errors.EXIT_USAGE, line
    assert MISSING in line
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.slow
@pytest.mark.parametrize("module,argv", [
    ("lcoan.train", SCRIPT_ARGS["lcoan-train"]),
    ("lcoan.evaluate", SCRIPT_ARGS["lcoan-evaluate"]),
    ("lcoan.upscale", SCRIPT_ARGS["lcoan-upscale"]),
    ("app", SCRIPT_ARGS["lcoan-app"]),
    ("serve.server", [f"{MISSING}_repository"]),
    ("plugins.build", SCRIPT_ARGS["lcoan-build-plugins"]),
    ("export.to_triton", SCRIPT_ARGS["lcoan-triton-repo"]),
])
def test_python_m_missing_input_is_one_line(module, argv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = _one_error_line(proc.stderr)
    assert proc.returncode == errors.EXIT_USAGE and MISSING in line, proc.stderr


@pytest.mark.parametrize("module,name", [
    ("serve.server", "ServeError"), ("lcoan.train", "TrainingDiverged"), ("lcoan.train", "TrainingInterrupted"),
    ("lcoan.upscale", "NonFiniteOutput"), ("lcoan.errors", "UsageError"), ("plugins.build", "BuildError"),
    ("plugins.build", "BuildFailed"), ("lcoan.tiling", "MemoryEstimateError"), ("lcoan.data.datasets", "DatasetError"),
])
def test_error_classes_share_the_base_and_keep_theirs(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, errors.LcoanError)
    old_base = {"ServeError": RuntimeError, "TrainingDiverged": RuntimeError, "TrainingInterrupted": RuntimeError,
                "NonFiniteOutput": ValueError, "UsageError": ValueError, "BuildError": RuntimeError,
                "BuildFailed": RuntimeError, "MemoryEstimateError": MemoryError, "DatasetError": RuntimeError}[name]
    assert issubclass(cls, old_base), "existing except clauses still catch it"


def test_app_exit_table_is_the_projects():
    from app import cli
    for code in ("EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_DAMAGED", "EXIT_INTERRUPTED"):
        assert getattr(cli, code) == getattr(errors, code), code
    assert (errors.EXIT_DAMAGED, errors.EXIT_INTERRUPTED) == (3, 130)


def test_os_error_line_names_the_file_first():
    exc = FileNotFoundError(2, "No such file or directory", "x/model.onnx")
    assert errors.one_line(exc) == "x/model.onnx: No such file or directory"
    assert errors.one_line(FileNotFoundError("plain message")) == "plain message"


def test_usage_errors_are_one_line(capsys):
    parser = errors.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int, required=True)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "x"])
    assert info.value.code == errors.EXIT_USAGE
    assert capsys.readouterr().err == "error: argument --n: invalid int value: 'x' (see tool --help)\n"


# Usage errors of the tools that had their own argparse: one line naming the option, status 2.
USAGE_CASES = [
    ("plugins.build", ["--bogus"], "--bogus"),
    ("plugins.build", ["--jobs", "0"], "--jobs"),
    ("pipeline.to_triton", ["--out", "repo", "--bogus"], "--bogus"),
    ("pipeline.to_triton", [], "--out"),
]


@pytest.mark.parametrize("module,argv,words", USAGE_CASES)
def test_tool_usage_errors_are_one_line(module, argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as info:
        sys.exit(main(argv))
    assert info.value.code == errors.EXIT_USAGE
    assert words in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.slow
@pytest.mark.parametrize("module,argv,words", [
    ("plugins.build", ["--bogus"], "--bogus"),
    ("export.to_triton", ["--out", "repo", "--bogus"], "--bogus"),
])
def test_python_m_usage_error_is_one_line(module, argv, words, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == errors.EXIT_USAGE and words in _one_error_line(proc.stderr), proc.stderr


def test_plugin_build_failure_keeps_the_compiler_lines_then_one_error(monkeypatch, capsys):
    from plugins import build as pbuild

    def fails(*args, **kwargs):
        raise pbuild.BuildFailed("command failed (2): cmake --build plugins/build",
                                 "harness.cu(3): error: identifier \"x\" is undefined\n1 error detected\n")
    monkeypatch.setattr(pbuild, "build", fails)
    assert pbuild.main(["--harness-only"]) == errors.EXIT_FAILED  # the tools ran; the sources did not build
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ['harness.cu(3): error: identifier "x" is undefined', "1 error detected"]
    assert err[2:] == ["error: command failed (2): cmake --build plugins/build"]


def test_plugin_build_failure_keeps_its_output_for_library_callers():
    from plugins import build as pbuild
    exc = pbuild.BuildFailed("command failed (2): make", "a.cu: error: bad")
    assert str(exc).splitlines() == ["command failed (2): make", "a.cu: error: bad"]  # loader, gpu_check
    assert isinstance(exc, pbuild.BuildError)


def test_lcoan_errors_imports_without_torch():
    """plugins.build imports lcoan.errors, and gpu_check runs it under a bare python3 without torch."""
    code = "import sys; import lcoan.errors, plugins.build; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


# --------------------------------------------------------------------------- the trainer's statuses
TRAIN_ARGV = ["--config", str(REPO / "configs" / "tiny_x2_291.yaml")]


def _train_raising(monkeypatch, exc):
    from lcoan import train as train_mod

    def boom(cfg, resume):
        raise exc
    monkeypatch.setattr(train_mod, "train", boom)
    return train_mod


@pytest.mark.parametrize("exc,code,words", [
    (ValueError("model.n_feats must be >= 1, got 0"), errors.EXIT_USAGE, "model.n_feats must be >= 1"),
    ("diverged", errors.EXIT_FAILED, "non-finite loss at step 3"),
    ("full disk", errors.EXIT_FAILED, "last.pt: no space left on device"),
])
def test_train_error_statuses(exc, code, words, monkeypatch, capsys, tmp_path):
    from lcoan.safeio import OutputError
    from lcoan.train import TrainingDiverged
    exc = {"diverged": TrainingDiverged("non-finite loss at step 3"),
           "full disk": OutputError("out/last.pt", "no space left on device")}.get(exc, exc)
    train_mod = _train_raising(monkeypatch, exc)
    assert train_mod.main(TRAIN_ARGV + ["--set", f"train.out={tmp_path}"]) == code
    assert words in _one_error_line(capsys.readouterr().err)


def _empty_data_argv(tmp_path):
    (tmp_path / "empty").mkdir()
    return TRAIN_ARGV + ["--set", f"data.root={tmp_path}", "--set", "data.train=empty", "--set", "data.val=",
                         "--set", f"train.out={tmp_path / 'out'}"]


def test_train_on_an_empty_folder_is_one_line(tmp_path, capsys):
    from lcoan import train as train_mod
    assert train_mod.main(_empty_data_argv(tmp_path)) == errors.EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert f"{tmp_path / 'empty'}: no usable images" in line
    assert not (tmp_path / "out").exists(), "nothing written"


@pytest.mark.slow
def test_python_m_train_on_an_empty_folder_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lcoan.train", *_empty_data_argv(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == errors.EXIT_USAGE, proc.stderr
    assert f"{tmp_path / 'empty'}: no usable images" in _one_error_line(proc.stderr)


def test_train_bug_keeps_its_traceback(monkeypatch, tmp_path):
    train_mod = _train_raising(monkeypatch, ZeroDivisionError("bug"))
    with pytest.raises(ZeroDivisionError):
        train_mod.main(TRAIN_ARGV + ["--set", f"train.out={tmp_path}"])


def test_train_ctrl_c_prints_the_resume_command(monkeypatch, capsys, tmp_path):
    from lcoan.train import TrainingInterrupted
    ckpt = tmp_path / "last.pt"
    train_mod = _train_raising(monkeypatch, TrainingInterrupted(7, ckpt))
    argv = TRAIN_ARGV + ["--set", f"train.out={tmp_path}", "--force"]
    assert train_mod.main(argv) == errors.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert f"interrupted at step 7: saved {ckpt}; continue with:" in err
    assert err.rstrip().endswith(f"train.out={tmp_path} --resume") and "--force" not in err and "error:" not in err


def test_train_ctrl_c_before_training_is_one_line(monkeypatch, capsys):
    from lcoan import train as train_mod

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_mod, "load_config", interrupted)
    assert train_mod.main(TRAIN_ARGV) == errors.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "\ninterrupted\n"


def test_app_ctrl_c_during_setup_is_one_line(monkeypatch, capsys):
    from app import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "load_backend", interrupted)
    assert cli.main(["synthetic:2", "-o", "unused.mp4", "--backend", "bicubic"]) == errors.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "\ninterrupted\n"


def test_serve_usage_and_start_errors(monkeypatch, capsys, tmp_path):
    from serve import server
    with pytest.raises(SystemExit) as info:  # argparse exits, as in every tool
        server.main([])
    assert info.value.code == errors.EXIT_USAGE
    assert "repository" in _one_error_line(capsys.readouterr().err)

    class NeverStarts:
        def __init__(self, *args, **kwargs):
            self.closed = False

        def start(self):
            raise server.ServeError("tritonserver exited with status 1 while starting:\n  bad\n  config")

        def close(self):
            self.closed = True
    monkeypatch.setattr(server, "TritonServer", NeverStarts)
    monkeypatch.setattr(server.signal, "signal", lambda *args: None)  # leave the test runner's handlers be
    assert server.main([str(tmp_path)]) == errors.EXIT_FAILED
    assert _one_error_line(capsys.readouterr().err) == \
        "error: tritonserver exited with status 1 while starting: bad config"
