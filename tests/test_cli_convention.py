"""One command-line convention over every console script of pyproject.toml (docs/ARCHITECTURE.md,
"Command-line conventions"): the same flag for the same concept, the shared flags' help from
lcoan/cli.py, and no private spelling. Outputs are ``-o/--out``; a tool with a precision option has
``--precision`` and, for each of its choices, the shorthand ``--fp32``/``--fp16``/``--int8`` (a
``store_const`` to the same dest), all in one mutually exclusive group (``lcoan.cli.add_precision_arg``).
Each tool's parser is taken from its ``build_parser()`` or, for a tool without one, caught as its
``main`` starts to parse (nothing runs).

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
           "--dtype": "--precision",
           "--num-threads": "--threads", "--jobs-threads": "--threads", "--silent": "--quiet", "--cpu": "--device",
           "--gpu": "--device", "--overlap": "--tile-overlap"}
# shared flag -> its one help text (lcoan/cli.py)
HELP = {"--weights": cli.WEIGHTS_HELP, "--device": cli.device_help(), "--no-progress": cli.PROGRESS_HELP,
        "--quiet": cli.QUIET_HELP}

# the shorthands of --precision: each a store_const of its name to dest "precision"
SHORTHANDS = ("--fp32", "--fp16", "--int8")
# flags that choose a precision, whatever their spelling
PRECISION_FLAGS = {"--precision", "--dtype", *SHORTHANDS}

# (script, what) -> why it still deviates; each says when it goes
DEVIATIONS = {
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
        flags = set(action.option_strings)
        if action.dest == "output" and not flags & ({"-o", "--out"} | PRIVATE.keys()):
            found.add("output not -o/--out")  # another spelling of an output (private ones are named above)
    dests = {a.dest for a in visible}
    for action in hidden:  # a hidden alias must land where the convention's flag does
        if action.dest not in dests and any(f in PRIVATE for f in action.option_strings):
            found.add(f"orphan alias {action.option_strings}")
    return found | _precision_deviations(parser, visible)


def _precision_deviations(parser: argparse.ArgumentParser, visible: list) -> set[str]:
    """Any precision option: a visible ``--precision`` (dest ``precision``) with a visible shorthand
    for each choice and no other, all in one mutually exclusive group with the hidden aliases."""
    actions = [a for a in parser._actions
               if a.dest == "precision" or PRECISION_FLAGS & set(a.option_strings)]
    if not actions:
        return set()
    found = set()
    canonical = next((a for a in visible if "--precision" in a.option_strings), None)
    if canonical is None or canonical.dest != "precision" or not canonical.choices:
        return found | {"no --precision"} | {f for a in visible for f in a.option_strings if f in SHORTHANDS}
    choices = set(canonical.choices)
    for flag in SHORTHANDS:
        shorthand = next((a for a in visible if flag in a.option_strings), None)
        if flag[2:] not in choices:
            if shorthand is not None:
                found.add(f"{flag} not a --precision choice")
        elif shorthand is None:
            found.add(f"no {flag}")
        elif not (isinstance(shorthand, argparse._StoreConstAction) and shorthand.dest == "precision"
                  and shorthand.const == flag[2:] and shorthand.option_strings == [flag]):
            found.add(flag)  # a flag of its own, not the shorthand
    group = next((g for g in parser._mutually_exclusive_groups if canonical in g._group_actions), None)
    if group is None or not all(a in group._group_actions for a in actions):
        found.add("precision not one group")
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
    parser = argparse.ArgumentParser()
    parser.add_argument("-O", "--dest", dest="output")
    assert _deviations(parser) == {"output not -o/--out"}


def test_the_check_catches_a_private_precision():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fp16", action="store_true")
    assert _deviations(parser) == {"no --precision", "--fp16"}
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=("fp32", "fp16"))
    assert _deviations(parser) == {"--dtype", "no --precision"}
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", choices=("fp32", "fp16"))
    parser.add_argument("--fp16", dest="precision", action="store_const", const="fp16")
    assert _deviations(parser) == {"no --fp32", "precision not one group"}
    parser = argparse.ArgumentParser()
    cli.add_precision_arg(parser, ("fp32", "fp16"), "fp32", "precision")
    parser.add_argument("--int8", action="store_true")
    assert _deviations(parser) == {"--int8 not a --precision choice", "precision not one group"}


def test_the_shared_helpers_follow_the_convention():
    parser = argparse.ArgumentParser()
    cli.add_output_arg(parser, "output")
    cli.add_precision_arg(parser, cli.PRECISIONS, "fp16", "precision", aliases=("--dtype",))
    assert _deviations(parser) == set()
    assert parser.parse_args([]).precision == "fp16"
    assert parser.parse_args(["--int8"]).precision == "int8"
    assert parser.parse_args(["--dtype", "fp32"]).precision == "fp32"
    for both in (["--fp16", "--int8"], ["--fp16", "--precision", "int8"], ["--dtype", "fp32", "--fp16"]):
        with pytest.raises(SystemExit):
            parser.parse_args(both)


# script -> (its precision when none is given, its choices): the same as before the shorthands
PRECISION_DEFAULTS = {"lcoan-build-engine": ("fp16", ("fp32", "fp16", "int8")),
                      "lcoan-triton-repo": ("fp16", ("fp32", "fp16", "int8")),
                      "lcoan-export-onnx": ("fp32", ("fp32", "fp16"))}


@pytest.mark.parametrize("script", sorted(PRECISION_DEFAULTS))
def test_precision_spellings_agree(script, monkeypatch):
    parser = _parser(script, monkeypatch)
    monkeypatch.undo()  # parse for real
    base = ["-o", "x"] if script == "lcoan-triton-repo" else []
    default, choices = PRECISION_DEFAULTS[script]
    assert parser.parse_args(base).precision == default
    for choice in choices:
        assert parser.parse_args(base + [f"--{choice}"]).precision == choice
        assert parser.parse_args(base + ["--precision", choice]).precision == choice
    with pytest.raises(SystemExit):
        parser.parse_args(base + [f"--{choices[0]}", "--precision", choices[-1]])
    for flag in ("-o", "--out", "--output"):  # --output: hidden alias
        assert parser.parse_args([flag, "z"]).output == "z"


def test_old_spellings_still_work(monkeypatch):
    from app.cli import build_parser as app_parser
    from lcoan.upscale import build_parser as upscale_parser
    assert upscale_parser().parse_args(["a.png", "--output", "out"]).output == "out"
    assert upscale_parser().parse_args(["a.png", "-o", "out"]).output == "out"
    assert app_parser().parse_args(["clip.mp4", "--output", "x.mp4"]).output == "x.mp4"
    assert app_parser().parse_args(["clip.mp4", "--out", "x.mp4"]).output == "x.mp4"
    assert app_parser().parse_args(["clip.mp4"]).precision == "fp32"
    assert app_parser().parse_args(["clip.mp4", "--fp16"]).precision == "fp16"
    to_onnx = _parser("lcoan-export-onnx", monkeypatch)
    monkeypatch.undo()
    assert to_onnx.parse_args(["--dtype", "fp16"]).precision == "fp16"  # export.to_onnx's old spelling
