"""Options shared by the lcoan command-line tools: one dialect for every CLI.

* tile context: ``--tile-overlap`` (LR pixels, default 32) everywhere (``--overlap`` is a hidden alias);
* output: ``-o/--out`` (:func:`add_output_arg`); precision: ``--precision`` with the shorthands
  ``--fp32``/``--fp16``/``--int8`` (:func:`add_precision_arg`); progress: ``--no-progress`` hides the bar;
  ``--quiet`` (where a tool has it) means errors only; the whole convention is in
  docs/ARCHITECTURE.md (tests/test_cli_convention.py checks it);
* device: ``auto`` (CUDA when available, else CPU) unless ``--device`` says otherwise;
* errors: one line ``error: <file>: <problem>`` on stderr, exit status 2, for usage errors too
  (:class:`ArgumentParser`, :class:`UsageError`; both in :mod:`lcoan.errors`, the one error path).
"""
from __future__ import annotations

import argparse

import torch

from .errors import ArgumentParser, UsageError  # noqa: F401 - ArgumentParser: every CLI imports it from here

# Every CLI's --weights: a name from the weights table (lcoan/pretrained.py) or a file.
WEIGHTS_HELP = ("a bundled weights name (edge_x2, ...; see lcoan/pretrained.py) or a .safetensors/.pt file "
                "(default: the bundled weights for --scale)")
PROGRESS_HELP = "no progress bar"
QUIET_HELP = "errors only: no progress bar and no summary"
DEFAULT_OVERLAP = 32  # LR pixels: above the 29-pixel receptive-field radius of `edge` without attention


def device_help(default: str = "auto") -> str:
    return f"auto, cpu, cuda, cuda:1; auto is CUDA when available, else CPU (default: {default})"


def add_output_arg(parser: argparse.ArgumentParser, help: str, required: bool = False,  # noqa: A002
                   metavar: str = "OUT") -> None:
    """``-o/--out`` (docs/ARCHITECTURE.md, command-line conventions); ``--output``, the old
    spelling of lcoan.upscale and the app, stays a hidden alias. One group, so that either
    spelling satisfies ``required`` and the two cannot both be given."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("-o", "--out", dest="output", metavar=metavar, help=help)
    group.add_argument("--output", dest="output", metavar=metavar, help=argparse.SUPPRESS)


PRECISIONS = ("fp32", "fp16", "int8")


def add_precision_arg(parser: argparse.ArgumentParser, choices=PRECISIONS, default: str | None = None,
                      help: str = "precision",  # noqa: A002
                      shorthand_help: dict[str, str] | None = None, aliases: tuple[str, ...] = ()) -> None:
    """``--precision {choices}`` (docs/ARCHITECTURE.md, command-line conventions) and its shorthands
    ``--fp32``/``--fp16``/``--int8`` (those in ``choices``), ``store_const`` to the same dest
    ``precision``, all in one mutually exclusive group: ``--fp16`` is ``--precision fp16``, and two
    precisions cannot both be given. ``default`` is the value when none is given (None: the tool
    decides later). ``shorthand_help`` may say per choice what it builds; ``aliases`` are old
    spellings of ``--precision`` (``--dtype``), hidden from --help."""
    for choice in choices:
        if choice not in PRECISIONS:
            raise ValueError(f"precision {choice!r} is not one of {PRECISIONS}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--precision", dest="precision", choices=choices, default=default, help=help)
    for choice in choices:
        what = (shorthand_help or {}).get(choice)
        group.add_argument(f"--{choice}", dest="precision", action="store_const", const=choice,
                           help=f"same as --precision {choice}" + (f": {what}" if what else ""))
    for alias in aliases:
        group.add_argument(alias, dest="precision", choices=choices, help=argparse.SUPPRESS)


def add_inference_args(parser: argparse.ArgumentParser, device_default: str = "auto") -> None:
    parser.add_argument("--tile", type=int, help="tiled inference with tiles of this many LR pixels "
                        "(default: whole images)")
    parser.add_argument("--tile-overlap", dest="tile_overlap", type=int, default=DEFAULT_OVERLAP,
                        metavar="O", help=f"context around each tile in LR pixels (default: {DEFAULT_OVERLAP})")
    parser.add_argument("--overlap", dest="tile_overlap", type=int, help=argparse.SUPPRESS)  # the app's old name
    parser.add_argument("--device", default=device_default, help=device_help(device_default))
    parser.add_argument("--no-progress", action="store_true", help=PROGRESS_HELP)


def inference_device(args: argparse.Namespace) -> torch.device:
    """Validate --tile/--tile-overlap/--device; raises :class:`UsageError` (a ValueError)."""
    if args.tile is not None and args.tile <= 0:
        raise UsageError(f"--tile must be positive, got {args.tile}")
    if args.tile_overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise UsageError(f"invalid --device {args.device!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available")
    return device


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", metavar="NAME|FILE", help=WEIGHTS_HELP)
    parser.add_argument("--scale", type=int, choices=(2, 3, 4),
                        help="upscaling factor (default: that of --weights, else 2)")


def load_cli_model(args: argparse.Namespace):
    """(model in eval mode, weights path) for --weights/--scale; raises CheckpointError."""
    from . import load_model, resolve_weights

    weights = resolve_weights(args.weights, args.scale)
    return load_model(weights, scale=args.scale), weights
