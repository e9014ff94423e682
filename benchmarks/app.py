"""What a user of ``python -m app`` sees: a real H.264 clip decoded, upscaled x2 and encoded to a
file, next to the model-only fps of the same backend and graph and a minimal PyAV loop doing the
same job, in one run.

    python -m benchmarks.app [--clip C.mp4] [--frames 150] [--backends bicubic,torch,onnxruntime]
                             [--repeats 3] [--json out/bench_app.json]
    python -m benchmarks.app --gpu             # make gpu-check: torch eager and compiled, ORT CUDA
    python -m benchmarks.app --soak 10000      # memory soak: 16x16 frames through bicubic, RSS start/end
    python -m benchmarks.app --models          # presets and peer nets: MFLOP/px, CPU fps, Jetson estimate

The clip is ``--clip``, or one made here: a 960x540 H.264 pan over an Urban100 image from the
data root (a gradient with texture when the data is absent). Each row runs the app's own
pipeline with its defaults (``open_source``/``open_sink``/``Pipeline``, as the CLI does: planes
from the decoder, ``--codec auto``, x264 ``veryfast``) into an .mp4 and reports its fps and the
host ms per frame of each stage; "model only" feeds the same backend the clip's decoded frames
in a loop (no decode, no encode). The reference is the minimal loop people would write: PyAV
threaded decode, swscale bicubic x2 on yuv420p, libx264 ``veryfast`` crf 18. Runs are
interleaved (reference, then each backend, ``--repeats`` times) and the medians compared, since
CPU timings on a shared machine drift.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path



# Jetson roofline for the --models table. Dense FP16 peaks of the GPU, derived from NVIDIA's
# published GPU sparse-INT8 TOPS (Jetson Orin series data sheet; Jetson Orin Nano Super
# developer kit page, Dec 2024): / 2 for dense, / 2 again for FP16. ESTIMATES, not measurements:
# no published TensorRT super-resolution figure on Orin was found to calibrate them.
JETSON_FP16_TFLOPS = {"AGX Orin 64GB": 42.6, "Orin NX 16GB": 15.0, "Orin Nano Super": 16.7}
JETSON_EFFICIENCY = 0.30   # fraction of peak a TensorRT FP16 conv net sustains (assumed)
JETSON_LR = (540, 960)     # x2 from 540p to 1080p, the app's real-time target


def _machine() -> str:
    import torch

    from .common import machine   # imports torch: not at module load (make gpu-check's bare python3)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{machine()}, {gpu}"


def make_clip(path: Path, frames: int = 150, size: tuple[int, int] = (960, 540), fps: int = 30) -> Path:
    """A real-looking H.264 clip: a pan over an Urban100 image (a textured gradient without data)."""
    import av
    import numpy as np
    from PIL import Image
    w, h = size
    from lcoan.data.paths import default_data_root   # lcoan.data imports torch: not at module load
    images = sorted((default_data_root() / "benchmark" / "Urban100" / "HR").glob("*.png"))
    if images:
        im = Image.open(images[len(images) // 2]).convert("RGB")
        k = max(1.0, 1.25 * w / im.width, 1.25 * h / im.height)
        canvas = np.asarray(im.resize((round(im.width * k), round(im.height * k)), Image.BICUBIC))
    else:
        yy, xx = np.mgrid[0:h * 5 // 4, 0:w * 5 // 4]
        rng = np.random.default_rng(0)
        canvas = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
        canvas = (canvas // 2 + rng.integers(0, 128, canvas.shape, dtype=np.uint8))
    big_h, big_w = canvas.shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "20", "preset": "fast"}
        for i in range(frames):
            t = i / max(1, frames - 1)
            x, y = int(t * (big_w - w)), int((0.5 + 0.5 * math.sin(2 * math.pi * t)) * (big_h - h))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas[y:y + h, x:x + w]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def reference_loop(clip: str, out: str, scale: int = 2) -> dict:
    """The minimal PyAV job: threaded decode -> swscale bicubic x scale on yuv420p -> libx264
    veryfast crf 18, one thread of Python."""
    import av
    t = time.perf_counter()
    n = 0
    with av.open(clip) as src, av.open(out, "w") as dst:
        vin = src.streams.video[0]
        vin.thread_type = "AUTO"
        rate = vin.average_rate or 30
        vout = dst.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width * scale, vin.codec_context.height * scale, "yuv420p"
        tb = vout.time_base = 1 / rate  # the muxer changes the stream's time base once it starts
        vout.options = {"crf": "18", "preset": "veryfast"}
        for frame in src.decode(vin):
            big = frame.reformat(width=vout.width, height=vout.height, format="yuv420p", interpolation="BICUBIC")
            big.pts, big.time_base = n, tb
            dst.mux(vout.encode(big))
            n += 1
        dst.mux(vout.encode(None))
    return {"frames": n, "fps": n / (time.perf_counter() - t)}


def app_run(clip: str, out: str, backend) -> dict:
    """The app's pipeline with the CLI's defaults, into a real file."""
    from app.stream import Pipeline, PipelineConfig
    from app.sinks import open_sink
    from app.sources import open_source
    source = open_source(clip)
    sink = open_sink(out, source, scale=backend.scale)
    s = Pipeline(source, backend, sink, PipelineConfig(progress=False)).run()
    if s["error"]:
        raise RuntimeError(s["error"])
    if out == "null":
        return {"fps": s["fps"]}
    import av
    with av.open(out) as check:  # every frame present, at s x the size
        v = check.streams.video[0]
        got = sum(1 for _ in check.demux(v) if _.size)
        size = (v.codec_context.width, v.codec_context.height)
    lat = s["latency_ms"]
    return {"fps": s["fps"], "frames_in": s["frames_in"], "frames_written": got, "size": f"{size[0]}x{size[1]}",
            "stages_ms": {k: lat[k]["mean"] for k in ("decode", "pre", "submit", "infer", "post", "encode")},
            "decoder": s["decoder"], "encoder": s["encoder"], "frames_converted": s["frames_converted"]["count"]}


def model_only(clip: str, backend, frames: int = 30) -> dict:
    """fps of the backend alone on the clip's decoded frames (uint8 planes in and out), with two
    batches in flight as the pipeline keeps them (the next upload overlaps this inference)."""
    import av
    from app.frames import planes_of
    with av.open(clip) as src:
        images = []
        for f in src.decode(video=0):
            images.append(planes_of(f)[0])
            if len(images) == min(frames, 8):
                break
        colour = None
    backend.run_u8(images[0][None], "yuv420p", colour)  # warm-up: allocators, autotuning, compiling
    t = time.perf_counter()
    queue = []
    for i in range(frames):
        queue.append(backend.submit(images[i % len(images)][None], "yuv420p", colour))
        if len(queue) > 1:
            queue.pop(0).result()
    for p in queue:
        p.result()
    return {"fps": frames / (time.perf_counter() - t)}


def _backends(names: list[str], gpu: bool, folder: Path):
    """(label, factory, note) per backend row; ``gpu``: torch eager and compiled and ORT on CUDA."""
    from app.backends import BicubicBackend, load_backend
    from lcoan.pretrained import default_pretrained
    weights = default_pretrained(2, video=True).name
    device = "cuda" if gpu else None
    rows = []
    for name in names:
        if name == "bicubic":
            rows.append(("bicubic", lambda: BicubicBackend(2), "swscale on the planes"))
        elif name == "torch":
            rows.append((f"torch {weights}", lambda: load_backend("torch", weights, device=device,
                                                                  precision="fp16" if gpu else "fp32"), ""))
        elif name == "torch-compiled":
            rows.append((f"torch {weights} --compile", lambda: load_backend(
                "torch", weights, device=device, precision="fp16" if gpu else "fp32", compile=True), ""))
        elif name == "onnxruntime":
            rows.append((f"onnxruntime {weights}", lambda: _ort_backend(weights, device, folder), ""))
        else:
            rows.append((name, None, "unknown backend"))
    return rows


def _ort_backend(weights: str, device, folder: Path):
    """ORT on the i420 graph where the exporter has integer I/O, else the float graph."""
    from app.backends import OrtBackend, load_torch_model
    from export.to_onnx import export_onnx
    model, _ = load_torch_model(weights, 2)
    path = folder / "model.onnx"
    dtype = "fp16" if device == "cuda" else "fp32"   # as the torch rows: FP16 on the GPU
    try:
        export_onnx(model, path, dtype=dtype, io="i420")
    except TypeError:  # an exporter without --io
        export_onnx(model, path, dtype=dtype)
    return OrtBackend(str(path), device=device)


def video_bench(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_app_") as tmp:
        return _video_bench(args, Path(tmp))


def _video_bench(args, work: Path) -> dict:
    import statistics
    clip = args.clip or str(make_clip(work / "clip_540p.mp4", args.frames))
    rows = [{"label": "reference loop (PyAV decode, swscale bicubic, x264 veryfast)", "runs": []}]
    built = []
    for label, factory, note in _backends(args.backends, args.gpu, work):
        row = {"label": label, "note": note, "runs": []}
        rows.append(row)
        if factory is None:
            continue
        try:
            built.append((row, factory()))
        except Exception as exc:  # BackendUnavailable and friends: the row says why
            row["note"] = str(exc).splitlines()[0][:160]
    for rep in range(args.repeats):  # interleaved: each repeat runs every row once
        rows[0]["runs"].append(reference_loop(clip, str(work / "ref.mp4")))
        print(f"repeat {rep + 1}: reference {rows[0]['runs'][-1]['fps']:.1f} fps", flush=True)
        for row, backend in built:
            row["runs"].append(app_run(clip, str(work / "app.mp4"), backend))
            print(f"repeat {rep + 1}: {row['label']} {row['runs'][-1]['fps']:.1f} fps", flush=True)
            if args.gpu:  # where the CPU's x264 is the limit, the null sink shows what the rest reaches
                row.setdefault("null_runs", []).append(app_run(clip, "null", backend)["fps"])
    ref = statistics.median(r["fps"] for r in rows[0]["runs"])
    rows[0]["fps"] = ref
    for row, backend in built:
        row["fps"] = statistics.median(r["fps"] for r in row["runs"])
        row["vs_reference"] = row["fps"] / ref
        row["model_only_fps"] = model_only(clip, backend, frames=args.model_frames)["fps"]
        row["vs_model_only"] = row["fps"] / row["model_only_fps"]
        last = row["runs"][-1]
        row.update({k: last[k] for k in ("decoder", "encoder", "size", "frames_written", "frames_converted")})
        row["stages_ms"] = {k: statistics.median(r["stages_ms"][k] or 0.0 for r in row["runs"])
                            for k in last["stages_ms"]}
        if row.get("null_runs"):
            row["null_sink_fps"] = statistics.median(row["null_runs"])
            row["note"] = (row["note"] + "; " if row["note"] else "") + f"-o null: {row['null_sink_fps']:.1f} fps"
        backend.close()
    return {"clip": args.clip or "generated: 960x540 H.264 pan over an Urban100 image", "frames": args.frames,
            "repeats": args.repeats, "reference_fps": ref, "rows": rows}


def _fps(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def video_table(result: dict) -> str:
    head = ("| pipeline | app fps | x reference | model-only fps | x model-only | decode | pre | infer | post "
            "| encode (host ms/frame) | frames out |")
    lines = [head, "|" + "---|" * 11]
    for r in result["rows"]:
        if "stages_ms" not in r:
            fps = f"{r['fps']:.1f}" if "fps" in r else "-"
            lines.append(f"| {r['label']} | {fps} | {'1.00' if 'fps' in r else '-'} | - | - | - | - | - | - | - "
                         f"| {r.get('note', '')} |")
            continue
        st = r["stages_ms"]
        lines.append(f"| {r['label']} | {_fps(r['fps'])} | {r['vs_reference']:.2f} | {_fps(r['model_only_fps'])} "
                     f"| {r['vs_model_only']:.2f} | " + " | ".join(f"{st[k]:.1f}" for k in
                                                               ("decode", "pre", "infer", "post", "encode"))
                     + f" | {r['frames_written']} at {r['size']}" + (f"; {r['note']}" if r.get("note") else "") + " |")
    return "\n".join(lines)


def soak(n: int, size: int, backend_name: str, model: str | None, out: str | None) -> dict:
    """``n`` synthetic frames through the app; RSS at start and end (flat memory check)."""
    from app.backends import load_backend
    from app.stream import Pipeline, PipelineConfig, rss_mb
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
    p.add_argument("--clip", help="H.264 (or any) video to run (default: a 960x540 pan made here)")
    p.add_argument("--frames", type=int, default=150, help="frames of the generated clip (default: 150)")
    p.add_argument("--model-frames", type=int, default=30, help="frames timed for the model-only fps")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats, medians reported (default: 3)")
    p.add_argument("--backends", default="bicubic", help="comma list of bicubic, torch, torch-compiled, "
                   "onnxruntime (default: bicubic)")
    p.add_argument("--gpu", action="store_true", help="torch eager and compiled (FP16) and ORT on CUDA; exits 0 "
                   "with the reason where there is no GPU")
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
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]

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

    if args.gpu:
        from plugins.loader import cuda_devices
        try:  # make gpu-check runs on a bare CUDA machine's python3, which may have no torch
            import torch
        except ImportError:
            torch = None
        if not cuda_devices() or torch is None or not torch.cuda.is_available():
            print("benchmarks.app --gpu: no CUDA GPU visible (driver or torch); nothing to time. Run `make gpu-check` "
                  "on a machine with an NVIDIA GPU.")
            return 0
        args.backends = ["torch", "torch-compiled", "onnxruntime"]
    print(f"# app on a real clip, x2, {args.frames} frames, {args.repeats} interleaved repeat(s); {_machine()}",
          flush=True)
    result = video_bench(args)
    table = video_table(result)
    print(table)
    _write(args.json, {"machine": _machine(), **result, "table": table})
    return 0


def _write(path: str, data: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
