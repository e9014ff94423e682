"""Options shared by the lcoan command-line tools."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

DEFAULT_OVERLAP = 32  # LR pixels: above the 29-pixel receptive-field radius of `edge` without attention


def add_inference_args(parser: argparse.ArgumentParser, device_default: str = "cpu") -> None:
    parser.add_argument("--tile", type=int, help="tiled inference with tiles of this many LR pixels")
    parser.add_argument("--tile-overlap", type=int, default=DEFAULT_OVERLAP,
                        help=f"context around each tile in LR pixels (default {DEFAULT_OVERLAP})")
    parser.add_argument("--device", default=device_default,
                        help=f"torch device, e.g. cpu, cuda, cuda:1 (default {device_default})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def inference_device(args: argparse.Namespace) -> torch.device:
    """Validate --tile/--tile-overlap/--device; raises ValueError with a one-line message."""
    if args.tile is not None and args.tile <= 0:
        raise ValueError(f"--tile must be positive, got {args.tile}")
    if args.tile_overlap < 0:
        raise ValueError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise ValueError(f"invalid --device {args.device!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="weights file (default: the bundled weights for --scale)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4),
                        help="upscaling factor (default: that of --weights, else 2)")


def load_cli_model(args: argparse.Namespace):
    """(model in eval mode, weights path) for --weights/--scale; raises CheckpointError."""
    from . import default_weights, load_model

    weights = Path(args.weights) if args.weights else default_weights(args.scale or 2)
    return load_model(weights, scale=args.scale), weights
