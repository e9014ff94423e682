"""Calibrate an FP32 LCoAN graph and write an INT8 Q/DQ graph for TensorRT.

    python -m calib --onnx lcoan_edge_x2_fp32.onnx --images DIR [-o lcoan_edge_x2_int8.onnx]
                    [--method entropy|percentile|minmax] [--num N] [--tile HxW]
                    [--downscale S] [--exclude NODE ...] [--report [--json F]]
                    [--sensitivity]

``--images``: LR images (e.g. Set14 ``LR_bicubic/X2``), or HR images with ``--downscale S``
(e.g. T91, bicubic ``imresize`` by 1/S). ``--report`` runs the FP32 and INT8 graphs on Set5 and
Set14 (ONNX Runtime CPU) and prints the Y-PSNR loss and the fraction of positions whose cluster
id changes. ``--sensitivity`` also ranks the Conv layers by what keeping each one in FP32 gains.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .quantize import (DEFAULT_METHOD, DEFAULT_NUM, METHODS, CalibrationError, calibration_tiles, default_exclusions,
                       evaluate, qdq_counts, quantizable_nodes, quantize, sensitivity)


def _tile(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--tile {text!r}: expected HxW, e.g. 64x64") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    from lcoan.cli import ArgumentParser, add_output_arg
    parser = ArgumentParser(prog="python -m calib", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, help="FP32 graph (either sort form)")
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="folder of calibration images (LR, or HR with --downscale)")
    add_output_arg(parser, "Q/DQ graph (default: the --onnx name with its _fp32 suffix, if any, replaced by "
                           "_int8, beside it: lcoan_edge_x2_int8.onnx)", metavar="F.onnx")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                        help="activation range method (default: %(default)s)")
    parser.add_argument("--num", type=int, default=DEFAULT_NUM, help="calibration tiles (default: %(default)s)")
    parser.add_argument("--tile", default="64x64", metavar="HxW", help="tile in LR pixels (default: %(default)s)")
    parser.add_argument("--downscale", type=int, default=None, metavar="S",
                        help="bicubic downscale of HR images by S (default: none, the images are LR)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--exclude", nargs="*", default=None,
                        help="Conv node names to keep in FP32 (default: head, matching, body, upsampler "
                             "and tail convs; give --exclude with no names to quantise every Conv)")
    parser.add_argument("--report", action="store_true", help="INT8 vs FP32 on Set5 + Set14")
    parser.add_argument("--sensitivity", action="store_true", help="per-Conv sensitivity (slow)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per set (default: all)")
    parser.add_argument("--json", metavar="F", help="write the report here (default: not written)")
    args = parser.parse_args(argv)
    if args.output is None:
        import re
        src_path = Path(args.onnx)
        args.output = str(src_path.with_name(re.sub(r"[._-]fp32$", "", src_path.stem) + "_int8.onnx"))
    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice

    from lcoan.graph_io import load_onnx
    from lcoan.safeio import atomic_write, check_writable, refuse_overwrite
    src = Path(args.onnx)
    # outputs are checked before any image is read or graph run: own inputs, folders, space
    refuse_overwrite(args.output, [src, args.images], what="--out graph")
    if args.json:
        refuse_overwrite(args.json, [src, args.images, args.output], what="--json file")
    graph = load_onnx(src)  # one line for a missing, empty, truncated or non-ONNX file
    check_writable(args.output, need_bytes=src.stat().st_size // 3, what="INT8 graph")
    if args.json:
        check_writable(args.json, what="--json report")
    from export.to_onnx import check_finite_graph
    check_finite_graph(graph, src)  # before reading any image: broken weights need no calibration
    del graph
    problems: list = []
    tiles = calibration_tiles(args.images, args.num, _tile(args.tile), args.downscale, problems=problems)
    for path, reason in problems:  # named as they are skipped; the exit status reports them at the end
        print(f"{path}: skipped: {reason}", file=sys.stderr)
    if args.exclude is None:
        args.exclude = default_exclusions(src)
    result = quantize(src, args.output, tiles=tiles, method=args.method, exclude=args.exclude)
    counts = qdq_counts(load_onnx(result.path, external_data=False))
    print(f"wrote {result.path} ({args.method}, {result.tiles} tiles of {args.tile}, "
          f"{len(result.quantized)}/{counts['Conv']} Conv in INT8, {counts['QuantizeLinear']} Q / "
          f"{counts['DequantizeLinear']} DQ, calibration {result.calibrate_s:.1f} s)")
    status = 1 if problems else 0
    if problems:
        print(f"error: {len(problems)} calibration image(s) could not be read (listed above); "
              f"calibrated on the other {len(tiles)} tiles", file=sys.stderr)
    if not (args.report or args.sensitivity):
        return status

    from export.samples import benchmark_samples
    from lcoan.graph_io import read_metadata
    scale = read_metadata(load_onnx(src, external_data=False), str(src)).scale or 2
    samples = benchmark_samples(scale, limit=args.limit)
    from tqdm import tqdm
    report = evaluate(src, result.path, tqdm(samples, desc="FP32 vs INT8", unit="img", file=sys.stderr,
                                             disable=args.no_progress, dynamic_ncols=True), scale)
    print(f"{len(samples)} images: FP32 {report.mean_fp32_psnr_y:.3f} dB, INT8 {report.mean_int8_psnr_y:.3f} dB, "
          f"loss {report.psnr_loss_db:.3f} dB; cluster ids changed at "
          f"{100 * report.cluster_flip_fraction:.3f}% of {report.positions} positions")
    out = {"quantize": {"method": args.method, "tiles": result.tiles, "excluded": args.exclude},
           "drift": report.to_dict()}
    if args.sensitivity:
        import tempfile
        nodes = quantizable_nodes(load_onnx(src, external_data=False))
        bar = tqdm(total=len(nodes) + 1, desc="sensitivity", unit="variant", file=sys.stderr,
                   disable=args.no_progress, dynamic_ncols=True)
        with tempfile.TemporaryDirectory() as tmp:
            rows = sensitivity(src, samples, scale, Path(tmp) / "ranges.json", tiles, nodes=nodes,
                               method=args.method, workdir=tmp,
                               on_variant=lambda name: (bar.set_postfix_str(name[-40:], refresh=False), bar.update()))
        bar.close()
        for row in rows:
            print(f"  {row['node']:<48} loss {row['loss_db']:.3f} dB  gain {row['gain_db']:+.3f} dB")
        out["sensitivity"] = rows
    written = [str(result.path)]
    if args.json:
        atomic_write(args.json, json.dumps(out, indent=2) + "\n")
        written.append(str(args.json))
    print(f"done: wrote {', '.join(written)} (INT8 loss {report.psnr_loss_db:.3f} dB on {len(samples)} images)")
    return status


def cli() -> None:
    """The console entry point (pyproject.toml's [project.scripts]); Ctrl-C is one line too, and
    --out is written atomically or not at all."""
    from lcoan.errors import run_cli
    run_cli(main)


if __name__ == "__main__":
    cli()
