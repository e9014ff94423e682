"""Upscale image files with an LCoAN model.

    python -m lcoan.upscale photo.jpg scans/ -o out/              # bundled x2 weights
    python -m lcoan.upscale big.png -o out/ --tile 256 --tile-overlap 32 --device cuda
    python -m lcoan.upscale img.png -o out/ --weights W.safetensors --scale 4

Inputs are files and folders; a folder contributes the image files directly inside it
(``.png .bmp .jpg .jpeg .tif .tiff .webp .ppm .pgm``, sorted by name; **not recursive**). Each
``<stem>.<ext>`` is written as ``OUT/<stem>_x{s}.<ext>`` (same format as the input).

* EXIF orientation is applied when reading (:func:`lcoan.data.imageio.read_image_with_alpha`), and
  the output is stored upright without an orientation tag.
* Greyscale inputs are run as three equal channels; the output is the channel mean, written as
  greyscale.
* Alpha is not given to the model: it is upscaled separately with bicubic
  (:func:`lcoan.data.resize.imresize`, clipped to ``[0, 1]``) and re-attached.
* 16-bit PNG inputs give 16-bit PNG outputs. Other formats are written with 8 bits.
* An image with a side under 16 pixels (down to 1x1) is mirrored out to 16 before the model runs
  and the result cropped back, so the convolutions' zero padding does not shift its colour.
* A file that cannot be read or written is reported on one line (naming it) and skipped; the others
  are still written and the run ends on one ``error:`` line with exit status 1. An output path that would overwrite one
  of the inputs, or another output of the same run, counts as such an error for that file.
  Outputs are written atomically (temporary file, then rename; :mod:`lcoan.safeio`).
* A model output with NaN or Inf is an error for that image (named, skipped), not a black or
  white picture.
* Memory: before an image runs, its peak is estimated (:func:`lcoan.tiling.check_memory`:
  about 128 bytes per LR pixel per feature channel, e.g. 1.1 TB for a 12000x12000 image with
  ``edge``) and compared with 80 % of the available memory (free GPU memory, or available RAM
  within a cgroup limit; ``LCOAN_MAX_MEMORY_MB`` overrides). An image that would not fit is
  refused in one line that suggests a ``--tile N`` that fits; tiling is not switched on silently,
  because it changes LCoAN's output slightly. Tiled runs show ``tile i/n`` in the progress bar.
* Exit status 2 (one line, no traceback) for unusable arguments: missing or wrong-scale weights,
  no input images at all, an unavailable device, an output folder that cannot be created or written
  (checked before the model is loaded).

Tiling (``--tile T --tile-overlap O``, :func:`lcoan.tiling.tiled_forward`) bounds memory: each
``T x T`` LR core is run with ``O`` pixels of context and only the core is kept, so there are no
seams. For a purely convolutional model (``attention="none"``) the result equals whole-image
inference (max abs difference <= 1e-4) when ``O`` is at least the receptive-field radius (29
LR pixels for the ``edge`` preset, 13 for ``tiny``; the default overlap is 32). LCoAN's collaborative attention is
non-local: every pixel attends to pixels of its cluster anywhere in the input, so a tile sees a
different set of candidates than the whole image and the tiled output is only close to the
whole-image output. ``python -m benchmarks.tiling_memory`` measures this difference and the memory
saved. Measured (CPU, 2 threads, ``edge`` x2 with *random* weights, since trained weights were not
available yet; trained attention is stronger, so expect larger differences with them):

* tiled (tile 48, overlap 32) vs whole, Set5 x2 LR ``baby`` (256x256) / ``butterfly`` (128x128):
  max abs difference 4.5e-4 / 1.7e-4, mean 1.7e-5, PSNR of tiled against whole 71.8 / 71.5 dB;
* peak RSS for a 512x512 LR input (1024x1024 output): whole image 1702 MB (1470 MB above the
  233 MB of the loaded process), tile 128 + overlap 32: 501 MB (268 MB above), 1.7x the time.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .data.imageio import IMAGE_EXTENSIONS, ImageReadError, read_image_with_alpha, write_image
from .data.resize import imresize
from .safeio import OutputError, check_writable, refuse_overwrite, remove_orphans
from .tiling import MemoryEstimateError, check_memory, tiled_forward
from .cli import (DEFAULT_OVERLAP, ArgumentParser, add_inference_args, add_model_args, add_output_arg, inference_device,
                  load_cli_model)
from .errors import EXIT_FAILED, LcoanError, UsageError, exit_status, report, run_cli

__all__ = ["upscale_array", "upscale_file", "output_path", "collect_inputs", "source_info", "main",
           "DEFAULT_OVERLAP", "NonFiniteOutput"]

PathLike = Union[str, os.PathLike]
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _model_scale(model: torch.nn.Module) -> int:
    scale = getattr(model, "scale", None)
    if scale is None:
        raise ValueError("the model has no 'scale' attribute")
    return int(scale)


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class NonFiniteOutput(LcoanError, ValueError):
    """The model produced NaN or Inf for an image: an error for that image, never a picture."""


# Images with a side below this many LR pixels are mirrored out to it (and the result cropped):
# with zero padding, a 1x1 image came out with its colour shifted.
MIN_SIDE = 16


@torch.no_grad()
def upscale_array(model: torch.nn.Module, rgb: np.ndarray, alpha: Optional[np.ndarray] = None,
                  tile: Optional[int] = None, overlap: int = DEFAULT_OVERLAP,
                  device: Optional[Union[str, torch.device]] = None,
                  on_tile=None, name: str = "image") -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``rgb`` float ``HxWx3`` in [0, 1] (and optional ``alpha`` ``HxW``) -> upscaled, clipped to [0, 1].

    The model runs on ``device`` (default: where its parameters are); the result is assembled on
    the CPU. Alpha is upscaled with MATLAB bicubic and clipped. The model must be in eval mode.
    Raises :class:`lcoan.tiling.MemoryEstimateError` before any work when the image would not fit
    in memory (with a ``--tile`` suggestion), and :class:`NonFiniteOutput` when the model output
    has NaN/Inf. ``on_tile(done, total)`` reports tiled progress.
    """
    scale = _model_scale(model)
    device = torch.device(device) if device is not None else _model_device(model)
    h, w = rgb.shape[:2]
    top, left = max(0, MIN_SIDE - h) // 2, max(0, MIN_SIDE - w) // 2
    if h < MIN_SIDE or w < MIN_SIDE:  # the convs' zero padding would reach the centre of a tiny image
        rgb = np.pad(rgb, ((top, max(0, MIN_SIDE - h) - top), (left, max(0, MIN_SIDE - w) - left), (0, 0)),
                     mode="symmetric")
    n_feats = getattr(getattr(model, "config", None), "n_feats", None)
    if n_feats:
        check_memory(rgb.shape[0], rgb.shape[1], scale, n_feats, tile, overlap, device, name=name)
    lr = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None].to(device)
    sr = tiled_forward(model, lr, scale, tile=tile, overlap=overlap, out_device=torch.device("cpu"),
                       on_tile=on_tile)
    bad = int((~torch.isfinite(sr)).sum())
    if bad:  # clamping would save NaN as black and +Inf as white
        raise NonFiniteOutput(f"{name}: the model output has {bad} non-finite value(s) (NaN/Inf); not written")
    out = sr[0].float().clamp_(0, 1).permute(1, 2, 0).numpy()[top * scale:(top + h) * scale,
                                                             left * scale:(left + w) * scale]
    up_alpha = None
    if alpha is not None:
        h, w = alpha.shape[:2]
        up_alpha = np.clip(imresize(alpha.astype(np.float64), size=(h * scale, w * scale)), 0.0, 1.0)
        up_alpha = up_alpha.astype(np.float32)
    return out, up_alpha


def source_info(path: PathLike) -> Tuple[int, bool]:
    """``(bit depth 8 or 16, is greyscale)`` of an image file, from its header only."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode, fmt = im.mode, im.format
    except Exception as exc:  # reported properly by the decoder afterwards
        raise ImageReadError(path, f"not a recognised image format ({type(exc).__name__})") from None
    bits = 16 if mode.startswith("I") else 8
    if fmt == "PNG":
        with open(path, "rb") as fh:
            head = fh.read(26)
        if head[:8] == _PNG_SIGNATURE and len(head) >= 26 and head[24] == 16:
            bits = 16  # Pillow opens 16-bit RGB(A) PNGs as 8-bit modes
    return bits, mode in _GREY_MODES  # palette images count as colour


def output_path(src: PathLike, out_dir: PathLike, scale: int) -> Path:
    """``OUT/<stem>_x{scale}<suffix>``."""
    src = Path(src)
    return Path(out_dir) / f"{src.stem}_x{scale}{src.suffix}"


def upscale_file(model: torch.nn.Module, src: PathLike, dst: PathLike, tile: Optional[int] = None,
                 overlap: int = DEFAULT_OVERLAP, device: Optional[Union[str, torch.device]] = None,
                 on_tile=None) -> Path:
    """Read ``src``, upscale it, write ``dst`` (atomically); returns ``dst``.

    16-bit PNG in and ``dst`` a ``.png``: 16-bit out; greyscale in: greyscale out; alpha kept.
    Raises :class:`ImageReadError` for unreadable input and ``ValueError`` if ``dst`` is ``src``.
    """
    src, dst = Path(src), Path(dst)
    refuse_overwrite(dst, [src])
    rgb, alpha = read_image_with_alpha(src)
    bits, grey = source_info(src)
    out, up_alpha = upscale_array(model, rgb, alpha, tile=tile, overlap=overlap, device=device,
                                  on_tile=on_tile, name=str(src))
    channels = [out.mean(axis=2, keepdims=True)] if grey else [out]
    if up_alpha is not None:
        channels.append(up_alpha[:, :, None])
    array = np.concatenate(channels, axis=2) if len(channels) > 1 else channels[0]
    if bits == 16 and dst.suffix.lower() != ".png":
        bits = 8
    if dst.suffix.lower() in (".jpg", ".jpeg") and array.shape[2] in (2, 4):
        array = array[:, :, :-1]  # JPEG has no alpha
    return write_image(dst, array, bits=bits)


def collect_inputs(inputs: Sequence[PathLike]) -> Tuple[List[Path], List[Tuple[Path, str]]]:
    """Expand files and folders (non-recursive) -> (image files, [(path, problem)] for bad entries)."""
    files: List[Path] = []
    problems: List[Tuple[Path, str]] = []
    exts = {e.lower() for e in IMAGE_EXTENSIONS}
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in exts)
            if not found:
                problems.append((entry, "folder contains no image files"))
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            problems.append((entry, "no such file or folder"))
    return files, problems


def _plan(files: List[Path], out_dir: Path, scale: int):
    """Pairs (src, dst) and problems for outputs that would hit an input or another output."""
    inputs = {p.resolve() for p in files}
    inodes = set()
    for p in files:  # hard links and bind mounts name an input under another path
        try:
            st = p.stat()
            inodes.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    planned: dict = {}
    jobs, problems = [], []
    for src in files:
        dst = output_path(src, out_dir, scale)
        key = dst.resolve()
        try:
            st = dst.stat()
            same_inode = (st.st_dev, st.st_ino) in inodes
        except OSError:
            same_inode = False
        if key in inputs or same_inode:
            problems.append((src, f"output '{dst}' would overwrite an input file; skipped"))
        elif key in planned:
            problems.append((src, f"output '{dst}' is also the output of '{planned[key]}'; skipped"))
        else:
            planned[key] = src
            jobs.append((src, dst))
    return jobs, problems


# --------------------------------------------------------------------------- CLI
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m lcoan.upscale",
        description="Upscale images with LCoAN. Folders are read non-recursively; "
                    "outputs are OUT/<stem>_x<s>.<ext>.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    add_output_arg(parser, "output folder", required=True, metavar="OUT")
    add_model_args(parser)
    add_inference_args(parser)
    return parser


def _run(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)

    from tqdm import tqdm

    device = inference_device(args)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output '{out_dir}' exists and is not a folder")

    files, problems = collect_inputs(args.inputs)
    if not files:
        detail = f" ({problems[0][0]}: {problems[0][1]})" if problems else ""
        raise UsageError("no input images" + detail)
    created = not out_dir.exists()
    try:  # an output folder that cannot be written fails now, not after the model ran on every image
        check_writable(out_dir / ".lcoan-write-check", what="output")
    except OutputError as exc:
        raise OutputError(out_dir, exc.problem) from None  # name the folder given, not the probe
    try:
        model, weights = load_cli_model(args)
    except BaseException:
        if created:  # a refused run leaves nothing behind, not even the folder the check made
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    # NHWC weights: oneDNN/cuDNN convs run without layout conversions and LSP's rows are views
    # (0.85x the time for edge on CPU); outputs differ from NCHW by float rounding only
    model = model.to(device, memory_format=torch.channels_last)
    scale = model.scale
    jobs, clashes = _plan(files, out_dir, scale)
    problems += clashes
    for _src, dst in jobs:  # what a killed run left beside its outputs
        remove_orphans(dst)
    for path, problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)

    failed = len(problems)
    bar = tqdm(jobs, unit="img", disable=args.no_progress, file=sys.stderr)
    for src, dst in bar:
        bar.set_postfix_str(src.name, refresh=False)

        def on_tile(done: int, total: int, _name=src.name) -> None:  # tiled runs: tile i/n of this image
            if total > 1:
                bar.set_postfix_str(f"{_name} tile {done}/{total}", refresh=True)
        try:
            upscale_file(model, src, dst, tile=args.tile, overlap=args.tile_overlap, device=device, on_tile=on_tile)
        except (MemoryEstimateError, NonFiniteOutput, OutputError) as exc:
            failed += 1
            message = " ".join(str(exc).split())
            message = message[len(f"{src}: "):] if message.startswith(f"{src}: ") else message
            tqdm.write(f"{src}: skipped: {message}", file=sys.stderr)
        except ImageReadError as exc:
            failed += 1
            tqdm.write(f"{src}: skipped: {exc.reason}", file=sys.stderr)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:  # write errors, out of memory, ...
            failed += 1
            message = " ".join(str(exc).split()) or type(exc).__name__
            tqdm.write(f"{src}: skipped: {message[:300]}", file=sys.stderr)
    bar.close()
    done = len(jobs) - (failed - len(problems))
    if failed:  # each failed file is named above; the run ends on the one error line
        return report(f"{failed} of {len(jobs) + len(problems)} image(s) failed (listed above); wrote {done} to "
                      f"{out_dir}", EXIT_FAILED)
    print(f"wrote {done} image(s) to {out_dir}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m lcoan.upscale`` (and the ``lcoan-upscale`` script): returns the exit status;
    errors are one line (:func:`lcoan.errors.exit_status`)."""
    return exit_status(_run, argv)


if __name__ == "__main__":
    run_cli(_run)
