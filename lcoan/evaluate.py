"""Benchmark evaluation: PSNR/SSIM on the Y channel for Set5, Set14, ... (EDSR/RCAN protocol).

    python -m lcoan.evaluate --sets Set5 Set14                      # bundled x2 weights
    python -m lcoan.evaluate --weights W.safetensors --sets Set5 --scale 4 --json out/eval.json
    python -m lcoan.evaluate --sets Set14 --tile 128 --tile-overlap 32   # memory-bounded

Protocol, per image (:func:`lcoan.metrics.psnr_y` / :func:`lcoan.metrics.ssim_y`): the SR output is
quantised to 8 bits, both images are converted to Y, ``shave = scale`` pixels are removed at each
border; the set's value is the mean over its images. The data layout is ``<data>/<set>/HR``. The LR
images are made from HR with MATLAB-exact bicubic (:func:`lcoan.data.resize.imresize`, HR cropped to a
multiple of the scale), as published tables are (``lr="matlab"``, the default, and the only choice
for HR-only sets such as B100 and Urban100); ``lr="files"`` reads ``<data>/<set>/LR_bicubic/X{s}``
instead (:class:`lcoan.data.datasets.PairedDataset`; the shared Set5/Set14 LR files were made by a
Python resize and differ from MATLAB's by a few levels). The default data root is
``default_data_root()/benchmark``.

The ``bicubic`` row upscales each LR file with MATLAB-exact bicubic :func:`lcoan.data.resize.imresize`
(uint8 in, uint8 out) to the HR size and scores it the same way.

Greyscale images (Set14 ``bridge``) are read as three equal channels (as EDSR does), so the model
sees an RGB image and the Y channel is computed from it like for every other image.

Inference is whole-image by default; ``tile`` / ``--tile`` runs :func:`lcoan.tiling.tiled_forward`
with ``overlap`` LR pixels of context (bounded memory; LCoAN's non-local attention then sees one tile
at a time, so the numbers can differ slightly from whole-image inference).

Errors the CLI reports on one line with exit status 2: missing weights, a weights file for another
scale than ``--scale``, a missing data folder or set.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .data.datasets import HROnlyDataset, PairedDataset
from .data.paths import default_data_root
from .data.resize import imresize
from .metrics import psnr_y, ssim_y
from .tiling import tiled_forward
from .cli import DEFAULT_OVERLAP, ArgumentParser, add_inference_args, add_model_args, inference_device, load_cli_model
from .errors import EXIT_FAILED, LcoanError, exit_status, run_cli

__all__ = ["evaluate", "evaluate_set", "bicubic_upscale", "format_table", "default_benchmark_root", "main"]

PathLike = Union[str, os.PathLike]


class EvaluationError(LcoanError, RuntimeError):
    """A problem with the inputs of an evaluation (missing folders, scale mismatch); one line."""


class BenchmarkDataError(EvaluationError):
    """An image of a benchmark set cannot be read: the command was right, the data is damaged."""

    exit_code = EXIT_FAILED


def default_benchmark_root() -> Path:
    return default_data_root() / "benchmark"


def _to_levels(t: torch.Tensor) -> np.ndarray:
    """CHW float tensor in [0, 1] read from an 8-bit file -> HxWx3 uint8 (exact)."""
    return np.round(t.permute(1, 2, 0).numpy().astype(np.float64) * 255.0).clip(0, 255).astype(np.uint8)


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB bicubic ``imresize`` of an 8-bit LR image (CHW in [0, 1]) to ``scale`` times its size."""
    levels = _to_levels(lr)
    h, w = levels.shape[:2]
    up = imresize(levels, size=(h * scale, w * scale))
    return torch.from_numpy(up.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))


LR_SOURCES = ("matlab", "files")


def _check_set_folder(root: Path, name: str, scale: int, lr: str = "matlab") -> Path:
    folder = root / name
    if not root.is_dir():
        raise EvaluationError(f"data folder not found: {root}")
    if not folder.is_dir():
        raise EvaluationError(f"benchmark set not found: {folder}")
    if lr not in LR_SOURCES:
        raise EvaluationError(f"lr source {lr!r} is not one of {', '.join(LR_SOURCES)}")
    for sub in (folder / "HR",) + ((folder / "LR_bicubic" / f"X{scale}",) if lr == "files" else ()):
        if not sub.is_dir():
            raise EvaluationError(f"benchmark folder not found: {sub}")
    return folder


@torch.no_grad()
def evaluate_set(model: Optional[torch.nn.Module], folder: PathLike, scale: int, tile: Optional[int] = None,
                 overlap: int = DEFAULT_OVERLAP, device: Union[str, torch.device] = "cpu",
                 bicubic: bool = True, progress: bool = False, lr: str = "matlab") -> dict:
    """Per-image and mean PSNR/SSIM of ``model`` (and bicubic) on one set folder.

    ``model=None`` scores bicubic only. ``lr``: "matlab" (LR made from HR) or "files".
    """
    device = torch.device(device)
    try:
        # the datasets warn and skip an unreadable image; a benchmark mean over fewer images than
        # the set has would be a different benchmark, so here it is an error naming the file
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="skipping unreadable image")
            dataset = (PairedDataset(folder, scale, train=False) if lr == "files" else
                       HROnlyDataset(Path(folder) / "HR", scale, train=False, augment=False))
    except UserWarning as exc:
        raise BenchmarkDataError(f"{Path(folder).name}: {str(exc).removeprefix('skipping unreadable image: ')}") from None
    except (FileNotFoundError, RuntimeError) as exc:
        raise EvaluationError(str(exc)) from None
    images = []
    iterator: Iterable[int] = range(len(dataset))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=Path(folder).name, leave=False, file=sys.stderr)
    for i in iterator:
        lr, hr = dataset[i]
        entry = {"name": dataset.names[i], "lr_size": list(lr.shape[-2:])}
        if model is not None:
            sr = tiled_forward(model, lr[None].to(device), scale, tile=tile, overlap=overlap,
                               out_device=torch.device("cpu"))[0].float()
            bad = int((~torch.isfinite(sr)).sum())
            if bad:  # scored, it would be a NaN mean (or, clamped, a made-up number)
                raise EvaluationError(f"{Path(folder).name}/{dataset.names[i]}: the model output has {bad} "
                                      "non-finite value(s) (NaN/Inf); the weights are broken")
            entry["psnr"] = psnr_y(sr, hr, shave=scale)
            entry["ssim"] = ssim_y(sr, hr, shave=scale)
        if bicubic:
            bic = bicubic_upscale(lr, scale)
            entry["bicubic_psnr"] = psnr_y(bic, hr, shave=scale)
            entry["bicubic_ssim"] = ssim_y(bic, hr, shave=scale)
        images.append(entry)
    result: dict = {"images": images}
    if model is not None:
        result["model"] = {"psnr": float(np.mean([e["psnr"] for e in images])),
                           "ssim": float(np.mean([e["ssim"] for e in images]))}
    if bicubic:
        result["bicubic"] = {"psnr": float(np.mean([e["bicubic_psnr"] for e in images])),
                             "ssim": float(np.mean([e["bicubic_ssim"] for e in images]))}
    return result


def evaluate(model: Optional[torch.nn.Module], data_root: Optional[PathLike] = None, sets: Sequence[str] = ("Set5",),
             scale: Optional[int] = None, tile: Optional[int] = None, overlap: int = DEFAULT_OVERLAP,
             device: Union[str, torch.device] = "cpu", bicubic: bool = True, progress: bool = False,
             lr: str = "matlab") -> dict:
    """Evaluate ``model`` on benchmark ``sets`` under ``data_root`` (default: the shared benchmark folder).

    Returns ``{"scale", "tile", "overlap", "sets": {name: {"model": {"psnr", "ssim"},
    "bicubic": {"psnr", "ssim"}, "images": [{"name", "lr_size", "psnr", "ssim", "bicubic_psnr",
    "bicubic_ssim"}, ...]}}}``. ``scale`` defaults to the model's; another value is an error. The model
    is run in eval mode (its previous mode is restored afterwards) and moved to ``device``.
    ``model=None`` gives the bicubic row only (``scale`` is then required).
    """
    if model is None and not bicubic:
        raise EvaluationError("nothing to evaluate: no model and bicubic=False")
    model_scale = getattr(model, "scale", None)
    if scale is None:
        if model_scale is None:
            raise EvaluationError("scale is not given and the model has no 'scale' attribute")
        scale = int(model_scale)
    if model_scale is not None and int(model_scale) != int(scale):
        raise EvaluationError(f"the model is for x{model_scale}, not x{scale}")
    root = Path(data_root) if data_root is not None else default_benchmark_root()
    folders = {name: _check_set_folder(root, name, scale, lr) for name in sets}
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval().to(device)
    try:
        results = {name: evaluate_set(model, folder, scale, tile=tile, overlap=overlap, device=device,
                                      bicubic=bicubic, progress=progress, lr=lr)
                   for name, folder in folders.items()}
    finally:
        if model is not None:
            model.train(was_training)
    return {"scale": int(scale), "lr": lr, "tile": tile, "overlap": overlap if tile else None,
            "data_root": str(root), "sets": results}


def format_table(result: dict, model_name: str = "LCoAN") -> str:
    """Markdown table: one row for bicubic (if present) and one for the model, PSNR / SSIM per set."""
    names = list(result["sets"])
    s = result["scale"]
    header = "| Method | Scale | " + " | ".join(f"{n} PSNR | {n} SSIM" for n in names) + " |"
    rule = "|---|---|" + "---:|---:|" * len(names)
    lines = [header, rule]
    rows = [r for r in ("bicubic", "model") if all(r in result["sets"][n] for n in names)]
    for row in rows:
        cells = [f"{result['sets'][n][row]['psnr']:.2f} | {result['sets'][n][row]['ssim']:.4f}" for n in names]
        label = "Bicubic" if row == "bicubic" else model_name
        lines.append(f"| {label} | x{s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
def _run(argv: Optional[Sequence[str]]) -> int:
    parser = ArgumentParser(
        prog="python -m lcoan.evaluate",
        description="PSNR/SSIM (Y channel, shave = scale) of an LCoAN model and of bicubic on benchmark sets.")
    add_model_args(parser)
    parser.add_argument("--data", help="benchmark root with <set>/HR and <set>/LR_bicubic/X<s> "
                                       "(default: $LCOAN_DATA/benchmark, else ../shared/data/benchmark "
                                       "beside the checkout)")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"],
                        help="set folder names, e.g. Set5 Set14 B100 Urban100 (default: Set5 Set14)")
    parser.add_argument("--lr", choices=LR_SOURCES, default="matlab",
                        help="LR images: made from HR with MATLAB-exact bicubic, as published tables "
                             "(default), or the set's LR_bicubic/X<s> files")
    parser.add_argument("--json", help="also write the full result (per image) to this JSON file (default: not written)")
    add_inference_args(parser)
    args = parser.parse_args(argv)

    from .safeio import atomic_write, check_writable, refuse_overwrite
    device = inference_device(args)
    if args.json:
        refuse_overwrite(args.json, [args.weights], what="--json file")
        check_writable(args.json, what="--json file")  # before the model runs on every set, not after
    model, weights = load_cli_model(args)
    result = evaluate(model, args.data, args.sets, scale=model.scale, tile=args.tile,
                      overlap=args.tile_overlap, device=device, progress=not args.no_progress, lr=args.lr)
    result["weights"] = str(weights)
    print(format_table(result, model_name=f"LCoAN ({weights.name})"))
    if args.json:
        print(f"wrote {atomic_write(args.json, json.dumps(result, indent=2))}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m lcoan.evaluate`` (and the ``lcoan-evaluate`` script): returns the exit status;
    errors are one line (:func:`lcoan.errors.exit_status`)."""
    return exit_status(_run, argv)


if __name__ == "__main__":
    run_cli(_run)
