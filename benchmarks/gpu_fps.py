"""PyTorch CUDA FP16 frames per second of the presets and peer nets, x2 from 540p to 1080p.

    python3 -m benchmarks.gpu_fps [--image FRAME.png] [--lr 540x960] [--iters 50]
                                  [--realtime-weights W] [--no-compile] [--out out/gpu_fps.json]

The second half of ``make gpu-check``. For each model it times, on one frame and side by side:

- ``eager``: the FP16 model called from Python;
- ``graph``: the same forward captured once in a CUDA graph and replayed, so that the hundreds of
  small kernel launches of LSP (assignment, sort, gathers, windowed GEMMs) cost one launch;
- ``compile``: ``torch.compile`` (inductor, default mode; 5-20 s per model on an H100 machine).

Each row also gives MFLOP per LR pixel, peak GPU memory and the FP16 output's PSNR against the
FP32 output of the same model on the same GPU (NaN fails the run). Weights: the bundled table
entries where they exist, ``--realtime-weights`` for realtime, otherwise seeded random weights
(said in the row; speed does not depend on the weights). The frame is ``--image``, or a mosaic
of Set14 HR crops from the data root (real content: the cluster sort sees real clusters).

Without a CUDA GPU it says so and exits 0 (``--device cpu`` runs the same code on the CPU, for
the tests). Rows are written to the JSON after every model, so a run stopped early keeps them.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "out" / "gpu_fps.json"
# (label, preset or peer, attention): lcoa and none side by side show attention's cost
MODELS = (
    ("realtime", "realtime", "lcoa"),
    ("realtime/none", "realtime", "none"),
    ("edge", "edge", "lcoa"),
    ("edge/none", "edge", "none"),
    ("compact-64x16", "compact-64x16", None),
    ("compact-32x16", "compact-32x16", None),
)


def mosaic_frame(h: int, w: int, root: Path) -> np.ndarray:
    """An h x w RGB float frame in [0, 1] tiled from Set14 HR crops (real image content)."""
    import numpy as np
    import torch

    from lcoan.data.datasets import list_images
    from lcoan.data.imageio import read_image

    images = [read_image(p) for p in list_images(root / "benchmark" / "Set14" / "HR")]
    if not images:
        raise FileNotFoundError(f"{root / 'benchmark' / 'Set14' / 'HR'}: no images (pass --image)")
    frame = np.zeros((h, w, 3), np.float32)
    tile, k = 240, 0
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            img = images[k % len(images)]
            k += 1
            th, tw = min(tile, h - y, img.shape[0]), min(tile, w - x, img.shape[1])
            frame[y:y + th, x:x + tw] = img[:th, :tw]
    return frame


def load_frame(args) -> tuple[torch.Tensor, str]:
    import numpy as np
    import torch

    from lcoan.data.imageio import read_image
    from lcoan.data.paths import default_data_root

    h, w = args.lr
    if args.image:
        img = read_image(args.image)
        if img.shape[0] < h or img.shape[1] < w:
            raise SystemExit(f"gpu_fps: {args.image}: {img.shape[1]}x{img.shape[0]} is smaller than --lr {h}x{w}")
        return torch.from_numpy(np.ascontiguousarray(img[:h, :w])).permute(2, 0, 1)[None].float(), str(args.image)
    return (torch.from_numpy(mosaic_frame(h, w, default_data_root())).permute(2, 0, 1)[None],
            "Set14 HR mosaic")


def build(label: str, name: str, attention: str | None, realtime_weights: str | None):
    """(model in eval mode, where its weights come from)."""
    import torch

    import lcoan
    from lcoan.pretrained import list_pretrained

    if attention is None:
        from .peers import build_peer
        return build_peer(name, 2), "random (peer; speed only)"
    if attention == "lcoa" and name == "realtime" and realtime_weights:
        return lcoan.load_model(realtime_weights), realtime_weights
    if attention == "lcoa" and f"{name}_x2" in list_pretrained():
        return lcoan.load_model(f"{name}_x2"), f"{name}_x2"
    torch.manual_seed(0)
    return lcoan.build_model(name, scale=2, attention=attention).eval(), "random (seed 0)"


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: torch.device, iters: int, warmup: int = 3) -> float:
    """Mean milliseconds per call: CUDA events on a GPU, the wall clock on the CPU."""
    import torch

    from plugins.gpu_check import cuda_ms

    if device.type == "cuda":
        return cuda_ms(torch, fn, iters, warmup)
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def cuda_graph(model, x: torch.Tensor):
    """Capture model(x) once; returns (replay fn, static output)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm the allocator and cuBLAS handles outside the capture
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    return graph.replay, out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) between two [0, 1] outputs, RGB, no quantisation; NaN if either is not finite."""
    import torch

    a, b = a.float(), b.float()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.nan
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else -10 * math.log10(mse)


def measure(label, name, attention, frame, args, device) -> list[dict]:
    import torch

    from .flops import mflops_per_pixel

    model, source = build(label, name, attention, args.realtime_weights)
    base = {"model": label, "weights": source,
            "params_k": round(sum(p.numel() for p in model.parameters()) / 1e3, 1),
            "mflop_per_px": round(mflops_per_pixel(model), 3)}
    model = model.to(device).eval()
    x32 = frame.to(device)
    rows = []
    with torch.inference_mode():
        ref = model(x32)
        half, x16 = model.half(), x32.half()
        if args.channels_last:  # NHWC end to end: cuDNN's FP16 kernels want it, and LSP's rows are views
            half, x16 = half.to(memory_format=torch.channels_last), x16.contiguous(memory_format=torch.channels_last)
        out16 = half(x16)
        drift = psnr(out16, ref)
        del ref

        suffix = "+nhwc" if args.channels_last else ""

        def row(mode: str, ms: float, out: torch.Tensor, note: str = "") -> dict:
            r = base | {"mode": mode + suffix, "ms": round(ms, 3), "fps": round(1e3 / ms, 1),
                        "fp16_vs_fp32_db": round(drift, 2) if math.isfinite(drift) else drift,
                        "matches_eager": bool(torch.allclose(out.float(), out16.float(), atol=2e-2)),
                        "note": note}
            if device.type == "cuda":
                r["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            return r

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rows.append(row("eager", time_ms(lambda: half(x16), device, args.iters), out16))
        if device.type == "cuda":
            try:
                replay, static = cuda_graph(half, x16)
                rows.append(row("graph", time_ms(replay, device, args.iters), static))
            except RuntimeError as e:  # a capture-unsafe op: report it rather than hide the row
                rows.append(base | {"mode": "graph", "note": f"capture failed: {str(e).splitlines()[0]}"})
        if not args.no_compile:
            t0 = time.perf_counter()
            try:
                compiled = torch.compile(half, dynamic=False)
                out = compiled(x16)
                _sync(device)
                secs = time.perf_counter() - t0
                rows.append(row("compile", time_ms(lambda: compiled(x16), device, args.iters), out,
                                note=f"compiled in {secs:.0f} s"))
            except Exception as e:  # noqa: BLE001 - inductor raises many types; the row says which
                rows.append(base | {"mode": "compile", "note": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
    del model, half
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def print_rows(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'model':<14} {'mode':<13} {'MFLOP/px':>8} {'ms':>8} {'fps':>7} {'fp16 dB':>8} {'peak MiB':>8}  note")
    for r in rows:
        ms = f"{r['ms']:8.3f}" if "ms" in r else f"{'—':>8}"
        fps = f"{r['fps']:7.1f}" if "fps" in r else f"{'—':>7}"
        db = f"{r['fp16_vs_fp32_db']:8.1f}" if "fp16_vs_fp32_db" in r else f"{'—':>8}"
        mem = f"{r['peak_mib']:8d}" if "peak_mib" in r else f"{'—':>8}"
        print(f"{r['model']:<14} {r['mode']:<13} {r['mflop_per_px']:8.3f} {ms} {fps} {db} {mem}  {r.get('note', '')}")


def write_json_atomic(path: Path, payload: dict) -> None:
    import json

    from lcoan.safeio import atomic_write
    atomic_write(path, json.dumps(payload, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_fps", description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="LR frame (cropped to --lr); default: a Set14 HR mosaic from the data root")
    ap.add_argument("--lr", default="540x960", help="LR size HxW (default 540x960: x2 to 1080p)")
    ap.add_argument("--iters", type=int, default=50, help="timed forwards per row")
    ap.add_argument("--models", default=",".join(m[0] for m in MODELS), help="comma-separated subset")
    ap.add_argument("--realtime-weights", help="weights for realtime until the table bundles them")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--channels-last", action="store_true", help="model and frame in NHWC (channels_last)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    args.lr = tuple(int(v) for v in args.lr.lower().split("x"))
    # the driver is asked first, with the standard library only, so that a machine without a GPU
    # (or a python3 without torch) gets the one-line skip
    from plugins.loader import cuda_devices
    if args.device == "cuda" and not cuda_devices():
        print("gpu_fps: no CUDA GPU visible (the CUDA driver reports none); nothing to time. Run `make gpu-check` "
              "on a machine with an NVIDIA GPU (--device cpu runs the same code on the CPU).")
        return 0
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_fps: no CUDA GPU visible to torch; nothing to time. Run `make gpu-check` on a machine "
              "with an NVIDIA GPU (--device cpu runs the same code on the CPU).")
        return 0
    device = torch.device(args.device)
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - {m[0] for m in MODELS})
    if unknown:
        print(f"gpu_fps: unknown model(s) {unknown}; choose from {[m[0] for m in MODELS]}", file=sys.stderr)
        return 2
    frame, frame_source = load_frame(args)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    report = {"device": gpu, "torch": torch.__version__, "lr": list(args.lr), "scale": 2, "dtype": "float16",
              "iters": args.iters, "channels_last": args.channels_last, "frame": frame_source, "rows": []}
    out = Path(args.out)
    for label, name, attention in MODELS:
        if label not in wanted:
            continue
        print(f"  {label} ...", flush=True)
        report["rows"] += measure(label, name, attention, frame, args, device)
        write_json_atomic(out, report)
    h, w = args.lr
    print_rows(report["rows"], f"x2 {h}x{w} -> {2 * h}x{2 * w}, FP16, {gpu}, torch {torch.__version__}, "
                               f"mean of {args.iters} forwards")
    bad = [r["model"] for r in report["rows"] if "fp16_vs_fp32_db" in r and not r["fp16_vs_fp32_db"] >= 0]
    ok = not bad
    report["ok"] = ok
    write_json_atomic(out, report)
    print(f"wrote {out}" + ("" if ok else f"; non-finite FP16 output: {bad}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
