"""End-to-end app throughput: every available backend and precision at 360p, 540p and 720p input,
x2, edge preset, side by side in one run.

    python -m benchmarks.app [--frames 3] [--sizes 360p,540p,720p] [--backends torch,onnxruntime,tensorrt]
                             [--weights W] [--engines DIR] [--tile T] [--json out/bench_app.json]
    python -m benchmarks.app --soak 10000      # memory soak: 16x16 frames through bicubic, RSS start/end
    python -m benchmarks.app --models          # presets and peer nets: MFLOP/px, CPU fps, Jetson estimate

Each cell runs the full pipeline (synthetic decode -> pre -> infer -> post -> null sink) on
``--frames`` frames after ``--warmup`` frames of the same size, and reports frames per second
plus the mean inference latency. Weights: the bundled ``weights/lcoan_edge_x2.safetensors``, or
random edge weights when they are absent (said in the output; speed does not depend on the
weights). TensorRT rows use engines from ``--engines`` (``edge_x2_<precision>.engine``) or are
built with ``export.to_trt`` when TensorRT and a GPU are present; otherwise the row says why not.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from .common import machine

SIZES = {"360p": (640, 360), "540p": (960, 540), "720p": (1280, 720)}

# Jetson roofline for the --models table. Dense FP16 peaks of the GPU, derived from NVIDIA's
# published GPU sparse-INT8 TOPS (Jetson Orin series data sheet; Jetson Orin Nano Super
# developer kit page, Dec 2024): / 2 for dense, / 2 again for FP16. ESTIMATES, not measurements:
# no published TensorRT super-resolution figure on Orin was found to calibrate them.
JETSON_FP16_TFLOPS = {"AGX Orin 64GB": 42.6, "Orin NX 16GB": 15.0, "Orin Nano Super": 16.7}
JETSON_EFFICIENCY = 0.30   # fraction of peak a TensorRT FP16 conv net sustains (assumed)
JETSON_LR = (540, 960)     # x2 from 540p to 1080p, the app's real-time target


def _machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{machine()}, {gpu}"


def _model(weights: str | None):
    import lcoan
    from lcoan import CheckpointError
    try:
        path = weights or str(lcoan.default_weights(2))
        return lcoan.load_model(path), f"weights {path}"
    except CheckpointError:
        import torch
        torch.manual_seed(0)
        return lcoan.build_model("edge", scale=2).eval(), "random edge weights (bundled weights absent)"


def _variants(model, args, workdir: Path):
    """(backend label, precision, factory or None, note) for every backend/precision."""
    import torch

    from app.backends import BackendUnavailable, OrtBackend, TensorRTBackend, TorchBackend
    cuda = torch.cuda.is_available()
    out = []
    if "torch" in args.backends:
        out.append(("torch", "fp32", lambda: TorchBackend(model, precision="fp32", threads=args.threads), ""))
        out.append(("torch", "fp16", (lambda: TorchBackend(model, precision="fp16")) if cuda else None,
                    "" if cuda else "fp16 needs CUDA"))
    onnx_paths = {}
    if "onnxruntime" in args.backends or "tensorrt" in args.backends:
        from export.to_onnx import export_onnx
        for dtype in ("fp32", "fp16"):
            onnx_paths[dtype] = export_onnx(model, workdir / f"edge_x2_{dtype}.onnx", dtype=dtype)
    if "onnxruntime" in args.backends:
        import onnxruntime as ort
        gpu_ep = any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        out.append(("onnxruntime", "fp32", lambda: OrtBackend(onnx_paths["fp32"], threads=args.threads), ""))
        out.append(("onnxruntime", "fp16", (lambda: OrtBackend(onnx_paths["fp16"])) if gpu_ep else None,
                    "" if gpu_ep else "FP16 graph skipped: no GPU execution provider (CPU EP runs it as FP32 + casts)"))
    if "tensorrt" in args.backends:
        for precision in ("fp32", "fp16"):
            out.append(("tensorrt", precision, _trt_factory(precision, onnx_paths, args, workdir), ""))
    resolved = []
    for name, precision, factory, note in out:
        if isinstance(factory, str):  # a reason
            resolved.append((name, precision, None, factory))
        else:
            resolved.append((name, precision, factory, note))
    return resolved, BackendUnavailable


def _trt_factory(precision: str, onnx_paths: dict, args, workdir: Path):
    from app.backends import TensorRTBackend
    engine = Path(args.engines or workdir) / f"edge_x2_{precision}.engine"
    try:
        from engine.runtime import require_runtime
        require_runtime()
    except Exception as exc:  # no TensorRT or no GPU: one line
        return f"unavailable: {str(exc).splitlines()[0][:120]}"
    if not engine.exists():
        try:
            from engine.build import build_engine, make_profile
            w, h = max(SIZES[s][0] for s in args.sizes), max(SIZES[s][1] for s in args.sizes)
            profile = make_profile((1, 3, 16, 16), (1, 3, 360, 640), (1, 3, h, w))
            build_engine(onnx_paths[precision], engine, precision=precision, profile=profile, log=lambda m: None)
        except Exception as exc:
            return f"engine build failed: {str(exc).splitlines()[0][:120]}"
    return lambda: TensorRTBackend(str(engine))


def bench_cell(backend, size: tuple[int, int], frames: int, warmup: int, tile, batch: int) -> dict:
    from app.pipeline import Pipeline, PipelineConfig
    from app.sinks import NullSink
    from app.sources import SyntheticSource
    w, h = size
    cfg = PipelineConfig(tile=tile, batch=batch, progress=False)
    if warmup:
        Pipeline(SyntheticSource(warmup, w, h), backend, NullSink(), cfg).run()
    s = Pipeline(SyntheticSource(frames, w, h), backend, NullSink(), cfg).run()
    return {"fps": s["fps"], "infer_ms": s["latency_ms"]["infer"]["mean"], "e2e_ms": s["latency_ms"]["e2e"]["mean"],
            "frames": s["frames_out"], "wall_s": s["wall_s"], "device": s["device"]}


def soak(n: int, size: int, backend_name: str, model: str | None, out: str | None) -> dict:
    """``n`` synthetic frames through the app; RSS at start and end (flat memory check)."""
    from app.backends import load_backend
    from app.pipeline import Pipeline, PipelineConfig, rss_mb
    from app.sinks import open_sink
    from app.sources import SyntheticSource
    rss_before_imports = rss_mb()
    backend = load_backend(backend_name, model)
    source = SyntheticSource(n, size, size)
    sink = open_sink(out or "null", source)
    s = Pipeline(source, backend, sink, PipelineConfig(progress=False)).run()
    return {"frames": n, "size": f"{size}x{size}", "backend": backend_name, "model": model, "output": out or "null",
            "frames_out": s["frames_out"], "fps": s["fps"], "rss_mb_start": s["rss_mb"]["start"],
            "rss_mb_after_100_frames": s["rss_mb"]["after_100_frames"], "rss_mb_end": s["rss_mb"]["end"], "rss_mb_process_start": round(rss_before_imports, 1)}


def model_table(threads: int, repeats: int = 3) -> tuple[list[dict], str]:
    """Every preset but ``paper`` and every peer net: MFLOP per LR pixel, PyTorch CPU fps at
    180x320 and 360x640 LR (x2), and the roofline Jetson fps estimate at 540p -> 1080p."""
    import torch

    from lcoan import build_model, list_presets

    from .common import time_it
    from .flops import mflops_per_pixel
    from .peers import PEERS, build_peer
    torch.set_num_threads(threads)
    models = [(p, build_model(p, scale=2).eval()) for p in list_presets() if p != "paper"]
    models += [(f"{p} (no attention)", build_model(p, scale=2, attention="none").eval())
               for p in ("edge", "realtime")]
    models += [(name, build_peer(name, 2)) for name in PEERS]
    rows = []
    for name, model in models:
        row = {"model": name, "mflop_px": mflops_per_pixel(model)}
        with torch.no_grad():
            for h, w in ((180, 320), (360, 640)):
                x = torch.rand(1, 3, h, w)
                row[f"cpu_fps_{h}"] = 1.0 / time_it(lambda: model(x), repeats)
        pixels = JETSON_LR[0] * JETSON_LR[1]
        for device, tflops in JETSON_FP16_TFLOPS.items():
            row[device] = JETSON_EFFICIENCY * tflops * 1e12 / (row["mflop_px"] * 1e6 * pixels)
        rows.append(row)
    text = (f"x2; CPU: PyTorch FP32, {threads} thread(s), median of {repeats}, random weights.\n"
            f"Jetson columns: ESTIMATE = {JETSON_EFFICIENCY:.0%} x dense FP16 peak / (MFLOP per LR pixel x "
            f"{JETSON_LR[1]}x{JETSON_LR[0]}) fps, peaks {JETSON_FP16_TFLOPS} TFLOP/s; attention's memory-bound "
            f"work is not in this model.\n")
    from .common import print_table
    print(text)
    table = print_table(rows, [("model", "model"), ("mflop_px", "MFLOP / LR px"),
                               ("cpu_fps_180", "CPU fps 180x320 LR"), ("cpu_fps_360", "CPU fps 360x640 LR")]
                        + [(d, f"{d} fps (estimate)") for d in JETSON_FP16_TFLOPS])
    return rows, text + table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.app", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--sizes", default="360p,540p,720p")
    p.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    p.add_argument("--weights")
    p.add_argument("--engines", help="folder with edge_x2_fp32.engine / edge_x2_fp16.engine")
    p.add_argument("--tile", type=int)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", default="out/bench_app.json")
    p.add_argument("--models", action="store_true",
                   help="presets and peer nets (MFLOP/px, CPU fps, Jetson estimate) instead of the app table")
    p.add_argument("--soak", type=int, metavar="N", help="memory soak run of N frames instead of the table")
    p.add_argument("--soak-size", type=int, default=16)
    p.add_argument("--soak-backend", default="bicubic")
    p.add_argument("--soak-model")
    p.add_argument("--soak-output", help="encode the soak run to this file (default: discard)")
    args = p.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown size {unknown[0]}; choose from {', '.join(SIZES)}")

    if args.models:
        rows, table = model_table(args.threads or 1)
        _write(args.json, {"machine": _machine(), "models": rows, "table": table,
                           "jetson": {"fp16_tflops": JETSON_FP16_TFLOPS, "efficiency": JETSON_EFFICIENCY,
                                      "lr": JETSON_LR, "label": "estimate"}})
        return 0

    if args.soak:
        r = soak(args.soak, args.soak_size, args.soak_backend, args.soak_model, args.soak_output)
        print(json.dumps(r, indent=2))
        _write(args.json, {"soak": r, "machine": _machine()})
        return 0

    model, weights_note = _model(args.weights)
    print(f"# app throughput, x2 edge preset, {weights_note}")
    print(f"# {_machine()}; {args.frames} timed frame(s) per size after {args.warmup} warm-up, batch {args.batch}, "
          f"tile {args.tile or 'none'}; synthetic source, null sink", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_app_") as tmp:
        variants, BackendUnavailable = _variants(model, args, Path(tmp))
        for name, precision, factory, note in variants:
            row = {"backend": name, "precision": precision, "note": note}
            if factory is None:
                rows.append(row)
                print(f"{name} {precision}: skipped ({note})", flush=True)
                continue
            try:
                backend = factory()
            except BackendUnavailable as exc:
                row["note"] = str(exc)
                rows.append(row)
                continue
            row["device"] = backend.device
            for size in args.sizes:
                t = time.perf_counter()
                cell = bench_cell(backend, SIZES[size], args.frames, args.warmup, args.tile, args.batch)
                row[size] = cell
                print(f"{name} {precision} {size}: {cell['fps']:.3f} fps (infer {cell['infer_ms']:.0f} ms/frame, "
                      f"{time.perf_counter() - t:.0f} s)", flush=True)
            backend.close()
            rows.append(row)
    table = _table(rows, args.sizes)
    print(table)
    _write(args.json, {"machine": _machine(), "weights": weights_note, "frames": args.frames, "warmup": args.warmup,
                       "batch": args.batch, "tile": args.tile, "rows": rows, "table": table})
    return 0


def _table(rows: list[dict], sizes: list[str]) -> str:
    head = "| backend | precision | device | " + " | ".join(f"{s} fps (infer ms)" for s in sizes) + " | note |"
    lines = [head, "|" + "---|" * (4 + len(sizes))]
    for r in rows:
        cells = []
        for s in sizes:
            c = r.get(s)
            cells.append(f"{c['fps']:.3f} ({c['infer_ms']:.0f})" if c else "-")
        lines.append(f"| {r['backend']} | {r['precision']} | {r.get('device', '-')} | " + " | ".join(cells)
                     + f" | {r.get('note', '')} |")
    return "\n".join(lines)


def _write(path: str, data: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
