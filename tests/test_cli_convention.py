"""One command-line convention over every console script of pyproject.toml (docs/ARCHITECTURE.md,
"Command-line conventions"): the same flag for the same concept, the shared flags' help from
lcoan/cli.py, and no private spelling. Each tool's parser is taken from its ``build_parser()`` or,
for a tool without one, caught as its ``main`` starts to parse (nothing runs).

``DEVIATIONS`` names what a tool still does its own way and why; an entry that no longer deviates
fails the test, so the list only shrinks.
"""
import argparse
import importlib
import tomllib

import pytest

from conftest import REPO
from lcoan import cli

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

# private spelling -> the convention's flag
PRIVATE = {"--weight": "--weights", "--output": "-o/--out", "--outdir": "-o/--out", "--progress": "--no-progress",
           "--dtype": "--precision", "--fp16": "--precision", "--fp32": "--precision", "--int8": "--precision",
           "--num-threads": "--threads", "--jobs-threads": "--threads", "--silent": "--quiet", "--cpu": "--device",
           "--gpu": "--device", "--overlap": "--tile-overlap"}
# shared flag -> its one help text (lcoan/cli.py)
HELP = {"--weights": cli.WEIGHTS_HELP, "--device": cli.device_help(), "--no-progress": cli.PROGRESS_HELP,
        "--quiet": cli.QUIET_HELP}

# (script, what) -> why it still deviates; each says when it goes
DEVIATIONS = {
    ("lcoan-export-onnx", "--dtype"): "precision as --dtype; fixed when export's CLI moves",
    ("lcoan-export-onnx", "no -o"): "--out without -o; fixed when export's CLI moves",
    ("lcoan-calib", "no -o"): "--out without -o; fixed when calib's CLI moves",
    ("lcoan-build-engine", "--fp16"): "precision as --fp32/--fp16/--int8; fixed when pipeline.to_trt's CLI moves",
    ("lcoan-build-engine", "--fp32"): "as --fp16",
    ("lcoan-build-engine", "--int8"): "as --fp16",
    ("lcoan-build-engine", "no -o"): "--out without -o; fixed when pipeline.to_trt's CLI moves",
    ("lcoan-triton-repo", "--fp16"): "precision as --fp32/--fp16/--int8; fixed when pipeline.to_triton's CLI moves",
    ("lcoan-triton-repo", "--fp32"): "as --fp16",
    ("lcoan-triton-repo", "--int8"): "as --fp16",
    ("lcoan-triton-repo", "no -o"): "--out without -o; fixed when pipeline.to_triton's CLI moves",
    ("lcoan-triton-repo", "help --weights"): "its own --weights help; fixed when pipeline.to_triton's CLI moves",
    ("lcoan-doctor", "--json"): "the report itself: --json prints it as JSON on stdout (documented), no FILE",
}


class _Caught(Exception):
    pass


def _parser(script: str, monkeypatch) -> argparse.ArgumentParser:
    module = importlib.import_module(SCRIPTS[script].partition(":")[0])
    if hasattr(module, "build_parser"):
        return module.build_parser()

    def catch(self, args=None, namespace=None):
        raise _Caught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    with pytest.raises(_Caught) as info:
        getattr(module, "main")([])
    return info.value.args[0]


def _deviations(parser: argparse.ArgumentParser) -> set[str]:
    found = set()
    visible = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    hidden = [a for a in parser._actions if a.option_strings and a.help == argparse.SUPPRESS]
    for action in visible:
        for flag in action.option_strings:
            if flag in PRIVATE:
                found.add(flag)
            if flag in HELP and action.help != HELP[flag]:
                found.add(f"help {flag}")
        if "--out" in action.option_strings and "-o" not in action.option_strings:
            found.add("no -o")
        if "--json" in action.option_strings and action.nargs == 0:
            found.add("--json")
    dests = {a.dest for a in visible}
    for action in hidden:  # a hidden alias must land where the convention's flag does
        if action.dest not in dests and any(f in PRIVATE for f in action.option_strings):
            found.add(f"orphan alias {action.option_strings}")
    return found


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_tool_follows_the_convention(script, monkeypatch):
    found = _deviations(_parser(script, monkeypatch))
    allowed = {what for (name, what) in DEVIATIONS if name == script}
    assert found - allowed == set(), f"{script}: deviations not in DEVIATIONS: {sorted(found - allowed)}"
    assert allowed - found == set(), f"{script}: fixed, remove from DEVIATIONS: {sorted(allowed - found)}"


def test_deviations_name_real_scripts():
    assert {name for name, _ in DEVIATIONS} <= set(SCRIPTS)


def test_the_check_catches_a_private_spelling():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output")
    parser.add_argument("--out")
    parser.add_argument("--device", help="which device")
    assert _deviations(parser) == {"--output", "no -o", "help --device"}


def test_old_spellings_still_work():
    from app.cli import build_parser as app_parser
    from lcoan.upscale import build_parser as upscale_parser
    assert upscale_parser().parse_args(["a.png", "--output", "out"]).output == "out"
    assert upscale_parser().parse_args(["a.png", "-o", "out"]).output == "out"
    assert app_parser().parse_args(["clip.mp4", "--output", "x.mp4"]).output == "x.mp4"
    assert app_parser().parse_args(["clip.mp4", "--out", "x.mp4"]).output == "x.mp4"
