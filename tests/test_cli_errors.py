"""One CLI error path: every user-facing error class is a ``lcoan.errors.LcoanError``, ``run_cli`` maps
it to one line and the exit-status table, and the console scripts of pyproject.toml resolve."""
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO
from lcoan import errors

USER_ERRORS = [
    ("lcoan.checkpoint", "CheckpointError"), ("lcoan.safeio", "OutputError"), ("lcoan.graph_io", "MetadataError"),
    ("lcoan.data.imageio", "ImageReadError"), ("lcoan.train", "ConfigError"), ("lcoan.evaluate", "EvaluationError"),
    ("export.errors", "ExportError"), ("calib.quantize", "CalibrationError"), ("engine.errors", "EngineError"), ("engine.trt", "TrtNotInstalled"),
    ("engine.runtime", "RuntimeUnavailable"), ("plugins.build", "BuildError"), ("plugins.loader", "PluginLibraryError"),
    ("app.endpoints", "SourceError"), ("app.endpoints", "SinkError"), ("app.backends", "BackendUnavailable"),
]


@pytest.mark.parametrize("module,name", USER_ERRORS)
def test_user_errors_share_the_base_class(module, name):
    assert issubclass(getattr(importlib.import_module(module), name), errors.LcoanError)


def _exit(main, capsys):
    with pytest.raises(SystemExit) as info:
        errors.run_cli(main, [])
    return info.value.code, capsys.readouterr().err


def test_run_cli_exit_table(capsys):
    class Damaged(errors.LcoanError):
        exit_code = errors.EXIT_DAMAGED

    def boom(exc):
        def main(argv):
            raise exc
        return main

    assert _exit(lambda argv: None, capsys) == (errors.EXIT_OK, "")
    assert _exit(lambda argv: errors.EXIT_FAILED, capsys) == (errors.EXIT_FAILED, "")
    code, err = _exit(boom(errors.LcoanError("x.png:\n  cannot  read")), capsys)
    assert (code, err) == (errors.EXIT_USAGE, "error: x.png: cannot read\n")
    assert _exit(boom(Damaged("cut short")), capsys) == (errors.EXIT_DAMAGED, "error: cut short\n")
    assert _exit(boom(FileNotFoundError("nope.onnx")), capsys) == (errors.EXIT_USAGE, "error: nope.onnx\n")
    assert _exit(boom(KeyboardInterrupt()), capsys) == (errors.EXIT_INTERRUPTED, "\ninterrupted\n")
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: its traceback stays
        errors.run_cli(boom(ZeroDivisionError("bug")), [])
    assert set(errors.EXIT_CODES) == {0, 1, 2, 3, 130}


def test_console_scripts_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert len(scripts) >= 10
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_console_script_one_line_error(tmp_path):
    script = Path(sys.executable).with_name("lcoan-parity")
    if not script.is_file():
        pytest.skip(f"{script} not installed (pip install -e . after a pyproject.toml change)")
    proc = subprocess.run([str(script), "--onnx", str(tmp_path / "missing.onnx")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == errors.EXIT_USAGE
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.onnx'}: no such ONNX file"]
