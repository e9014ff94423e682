"""Peak memory of whole-image vs tiled inference (edge preset, CPU), and tiled-vs-whole difference.

    python -m benchmarks.tiling_memory [--size 1024] [--tiles 256 128] [--overlap 32]
                                       [--weights W] [--json out/benchmarks/tiling_memory.json]

Memory: each configuration runs in a fresh process, which builds the model (bundled x2 weights if
present, else random weights: memory does not depend on the values), makes a random
``size x size`` LR image, records its RSS (``base``), runs one forward pass under ``no_grad`` and
reports the peak RSS of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). ``peak - base``
is the memory the inference itself needed (activations, attention buffers, the output image).

Difference: on real images (Set5 x2 LR files by default) the tiled output is compared with the
whole-image output for the model with collaborative attention (``lcoa``) and for the same weights
with the attention switched off (``none``, purely convolutional, which must agree to ~1e-6): max
and mean absolute difference on ``[0, 1]`` data and the PSNR of tiled against whole (8-bit quantised,
all three channels, no shave).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import machine, peak_rss_bytes, print_table, rss_bytes, write_json

MB = 2 ** 20


def _model(weights: str | None, attention: str | None = None):
    from lcoan import CheckpointError, build_model, default_weights, load_model

    overrides = {} if attention is None else {"attention": attention}
    path = weights
    if path is None:
        try:
            path = str(default_weights(2))
        except CheckpointError:
            path = None
    if path is not None:
        return load_model(path, **overrides), path
    torch.manual_seed(0)
    return build_model("edge", scale=2, **overrides).eval(), "random edge x2"


def measure(size: int, tile: int | None, overlap: int, weights: str | None) -> dict:
    from lcoan.tiling import tiled_forward

    model, source = _model(weights)
    lr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        out = tiled_forward(model, lr, model.scale, tile=tile, overlap=overlap)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    return {"weights": source, "base_mb": base / MB, "peak_mb": peak / MB,
            "inference_mb": max(0, peak - base) / MB, "seconds": seconds,
            "output": list(out.shape)}


def run_in_child(size: int, tile: int | None, overlap: int, weights: str | None, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.tiling_memory", "--child", "--size", str(size),
           "--overlap", str(overlap), "--threads", str(threads), "--child-tile", str(tile or 0)]
    if weights:
        cmd += ["--weights", weights]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiled_vs_whole(images: list[Path], tile: int, overlap: int, weights: str | None,
                   modes: tuple[str, ...] = ("lcoa", "none")) -> list[dict]:
    from lcoan.data.imageio import read_image
    from lcoan.metrics import quantize
    from lcoan.tiling import tiled_forward

    rows = []
    for attention in modes:
        model, source = _model(weights, attention=attention)
        for path in images:
            lr = torch.from_numpy(read_image(path).transpose(2, 0, 1).copy())[None]
            with torch.no_grad():
                whole = model(lr)
                tiled = tiled_forward(model, lr, model.scale, tile=tile, overlap=overlap)
            diff = (tiled - whole).abs()
            mse = (quantize(tiled.double()) - quantize(whole.double())).pow(2).mean().item()
            rows.append({"attention": attention, "image": path.name, "lr_size": f"{lr.shape[-2]}x{lr.shape[-1]}",
                         "tile": tile, "overlap": overlap, "max_abs": diff.max().item(),
                         "mean_abs": diff.mean().item(),
                         "psnr_tiled_vs_whole": None if mse == 0 else -10 * math.log10(mse),
                         "weights": source})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="LR side length for the memory test")
    parser.add_argument("--tiles", type=int, nargs="+", default=[128])
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--weights", help="x2 weights (default: bundled, else random edge weights)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--diff-images", nargs="*", default=None,
                        help="LR images for the tiled-vs-whole difference (default: Set5 x2 LR)")
    parser.add_argument("--diff-tile", type=int, default=48,
                        help="tile for the difference test; tile + 2 * overlap must be smaller than the "
                             "image, or the single window is the whole image and the difference is 0")
    parser.add_argument("--diff-modes", nargs="+", default=["lcoa", "none"])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", default="out/benchmarks/tiling_memory.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-tile", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.child:
        print(json.dumps(measure(args.size, args.child_tile or None, args.overlap, args.weights)))
        return 0

    payload = {"machine": machine(), "size": args.size, "overlap": args.overlap}
    if not args.skip_memory:
        rows = []
        for tile in [None] + list(args.tiles):
            result = run_in_child(args.size, tile, args.overlap, args.weights, args.threads)
            rows.append({"mode": "whole" if tile is None else f"tile {tile} + {args.overlap}",
                         "lr": f"{args.size}x{args.size}", **result})
            print(f"  {rows[-1]}", file=sys.stderr)
        print(f"\nPeak RSS, edge x2, {args.size}x{args.size} LR -> {2 * args.size}x{2 * args.size}, "
              f"{machine()}")
        print_table(rows, [("mode", "inference"), ("base_mb", "RSS before (MB)"), ("peak_mb", "peak RSS (MB)"),
                           ("inference_mb", "peak - before (MB)"), ("seconds", "time (s)"), ("error", "error")])
        payload["memory"] = rows

    if args.diff_images is None:
        from lcoan.data.paths import default_data_root
        folder = default_data_root() / "benchmark" / "Set5" / "LR_bicubic" / "X2"
        images = sorted(folder.glob("*.png")) if folder.is_dir() else []
    else:
        images = [Path(p) for p in args.diff_images]
    if images:
        diff_rows = tiled_vs_whole(images, args.diff_tile, args.overlap, args.weights,
                                   tuple(args.diff_modes))
        print(f"\nTiled (tile {args.diff_tile}, overlap {args.overlap}) vs whole-image output, {diff_rows[0]['weights']}")
        print_table(diff_rows, [("attention", "attention"), ("image", "image"), ("lr_size", "LR"),
                                ("max_abs", "max |diff|"), ("mean_abs", "mean |diff|"),
                                ("psnr_tiled_vs_whole", "PSNR tiled vs whole (dB)")])
        payload["tiled_vs_whole"] = diff_rows
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
