"""Calibrate an FP32 LCoAN graph and write an INT8 Q/DQ graph for TensorRT.

    python -m calib --onnx lcoan.onnx --images DIR --out lcoan_int8.onnx
                    [--method entropy|percentile|minmax] [--num N] [--tile HxW]
                    [--downscale S] [--exclude NODE ...] [--report [--json F]]
                    [--sensitivity]

``--images``: LR images (e.g. Set14 ``LR_bicubic/X2``), or HR images with ``--downscale S``
(e.g. T91, bicubic ``imresize`` by 1/S). ``--report`` runs the FP32 and INT8 graphs on Set5 and
Set14 (ONNX Runtime CPU) and prints the Y-PSNR loss and the fraction of positions whose cluster
id changes. ``--sensitivity`` also ranks the Conv layers by what keeping each one in FP32 gains.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .quantize import (DEFAULT_METHOD, DEFAULT_NUM, METHODS, CalibrationError, calibration_tiles, default_exclusions,
                       evaluate, qdq_counts, quantize, sensitivity)


def _tile(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--tile {text!r}: expected HxW, e.g. 64x64") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calib", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, help="FP32 graph (either sort form)")
    parser.add_argument("--images", required=True, help="folder of calibration images")
    parser.add_argument("--out", default="lcoan_int8.onnx")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    parser.add_argument("--num", type=int, default=DEFAULT_NUM, help="calibration tiles")
    parser.add_argument("--tile", default="64x64", help="tile HxW in LR pixels")
    parser.add_argument("--downscale", type=int, default=None, help="bicubic downscale of HR images")
    parser.add_argument("--exclude", nargs="*", default=None,
                        help="Conv node names to keep in FP32 (default: head, matching, upsampler and "
                             "tail convs; give --exclude with no names to quantise every Conv)")
    parser.add_argument("--report", action="store_true", help="INT8 vs FP32 on Set5 + Set14")
    parser.add_argument("--sensitivity", action="store_true", help="per-Conv sensitivity (slow)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per set")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice

    import onnx
    from lcoan.safeio import atomic_write, refuse_overwrite
    src = Path(args.onnx)
    if not src.is_file():
        raise CalibrationError(f"{src}: no such ONNX file")
    refuse_overwrite(args.out, [src], what="--out graph")
    try:
        graph = onnx.load(str(src))
    except Exception as exc:  # protobuf DecodeError, truncated file
        raise CalibrationError(f"{src}: not a readable ONNX file ({type(exc).__name__})") from None
    from export.to_onnx import check_finite_graph
    check_finite_graph(graph, src)  # before reading any image: broken weights need no calibration
    del graph
    if args.json:
        refuse_overwrite(args.json, [src, args.images], what="--json file")
    problems: list = []
    tiles = calibration_tiles(args.images, args.num, _tile(args.tile), args.downscale, problems=problems)
    for path, reason in problems:  # named as they are skipped; the exit status reports them at the end
        print(f"{path}: skipped: {reason}", file=sys.stderr)
    if args.exclude is None:
        args.exclude = default_exclusions(src)
    result = quantize(src, args.out, tiles=tiles, method=args.method, exclude=args.exclude)
    counts = qdq_counts(onnx.load(str(result.path)))
    print(f"wrote {result.path} ({args.method}, {result.tiles} tiles of {args.tile}, "
          f"{len(result.quantized)}/{counts['Conv']} Conv in INT8, {counts['QuantizeLinear']} Q / "
          f"{counts['DequantizeLinear']} DQ, calibration {result.calibrate_s:.1f} s)")
    status = 1 if problems else 0
    if problems:
        print(f"error: {len(problems)} calibration image(s) could not be read (listed above); "
              f"calibrated on the other {len(tiles)} tiles", file=sys.stderr)
    if not (args.report or args.sensitivity):
        return status

    from export.parity import benchmark_samples
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    scale = int(meta.get("lcoan_scale", 2))
    samples = benchmark_samples(scale, limit=args.limit)
    report = evaluate(src, result.path, samples, scale)
    print(f"{len(samples)} images: FP32 {report.mean_fp32_psnr_y:.3f} dB, INT8 {report.mean_int8_psnr_y:.3f} dB, "
          f"loss {report.psnr_loss_db:.3f} dB; cluster ids changed at "
          f"{100 * report.cluster_flip_fraction:.3f}% of {report.positions} positions")
    out = {"quantize": {"method": args.method, "tiles": result.tiles, "excluded": args.exclude},
           "drift": report.to_dict()}
    if args.sensitivity:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            rows = sensitivity(src, samples, scale, Path(tmp) / "ranges.json", tiles, method=args.method,
                               workdir=tmp)
        for row in rows:
            print(f"  {row['node']:<48} loss {row['loss_db']:.3f} dB  gain {row['gain_db']:+.3f} dB")
        out["sensitivity"] = rows
    if args.json:
        atomic_write(args.json, json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    from export.errors import ExportError
    from lcoan.checkpoint import CheckpointError
    from lcoan.safeio import OutputError
    try:
        raise SystemExit(main())
    except (CalibrationError, FileNotFoundError, ExportError, CheckpointError, OutputError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2)
