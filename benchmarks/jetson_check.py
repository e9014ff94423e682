"""TensorRT frames per second of the presets on a Jetson, beside the roofline estimate: what fills
the table of docs/jetson.md.

    make jetson-check                     # python -m benchmarks.jetson_check --out out/jetson_check.json
    python -m benchmarks.jetson_check --presets realtime --precisions fp16,int8 --calib LR_DIR --iters 200

Off a Jetson (no ``/etc/nv_tegra_release``) it says so and exits 0: the estimate is all there is.
On one, for each preset and precision it builds an engine for one 540x960 LR frame (x2 to 1080p,
the app's real-time target) with the project's build (``python -m export.to_trt``; the engine
cache reuses it on a second run), times :class:`engine.runtime.Engine` on a frame of Set14 crops
(median of ``--repeats`` runs of ``--iters`` calls after a warm-up) and, where ``tegrastats``
exists, reads the board's input power (VDD_IN) meanwhile. Each row also carries the estimate of
``benchmarks.app`` (30 % of the module's dense FP16 peak / FLOPs per frame) for this module, so
the ratio says how far the roofline is off. ``tiny`` has no bundled weights: seeded random ones
(speed does not depend on the weights). INT8 needs ``--calib DIR`` (LR images).

The JSON records the L4T release, the module, ``nvpmodel -q`` and whether ``jetson_clocks`` was
on, and is rewritten after every row, so a run stopped early keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LR = (540, 960)
WEIGHTS = {"realtime": "realtime_x2", "edge": "edge_x2", "tiny": None}
# /proc/device-tree/model -> benchmarks.app.JETSON_FP16_TFLOPS key
MODULES = (("AGX Orin", "AGX Orin 64GB"), ("Orin NX", "Orin NX 16GB"), ("Orin Nano", "Orin Nano Super"))


def _run(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return f"{cmd[0]} not found"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return " ".join((res.stdout or res.stderr).split())[:300]


def board() -> dict:
    from pipeline.doctor import jetson_release
    try:
        model = Path("/proc/device-tree/model").read_text().strip("\0\n ")
    except OSError:
        model = "unknown"
    return {"l4t": jetson_release(), "module": model, "nvpmodel": _run(["nvpmodel", "-q"]),
            "jetson_clocks": _run(["jetson_clocks", "--show"])}


def estimate_fps(preset: str, module: str) -> tuple[float | None, float]:
    """(roofline fps for this module or None if unknown, MFLOP per LR pixel)."""
    from benchmarks.app import JETSON_EFFICIENCY, JETSON_FP16_TFLOPS
    from benchmarks.flops import mflops_per_pixel
    from lcoan import build_model
    mflop = mflops_per_pixel(build_model(preset, scale=2))
    key = next((k for name, k in MODULES if name in module), None)
    if key is None:
        return None, mflop
    return JETSON_EFFICIENCY * JETSON_FP16_TFLOPS[key] * 1e12 / (mflop * 1e6 * LR[0] * LR[1]), mflop


def build(preset: str, precision: str, calib: str | None, out_dir: Path) -> Path:
    from pipeline.to_trt import main as build_main
    weights = WEIGHTS[preset]
    if weights is None:  # seeded random weights, saved once
        import torch
        from lcoan import build_model
        from lcoan.checkpoint import save_safetensors
        weights = str(out_dir / f"lcoan_{preset}_x2_random.safetensors")
        if not Path(weights).exists():
            torch.manual_seed(0)
            save_safetensors(build_model(preset, scale=2), weights)
    engine = out_dir / f"lcoan_{preset}_x2_{precision}_540p.engine"
    shape = f"1x3x{LR[0]}x{LR[1]}"
    argv = ["--weights", weights, f"--{precision}", "--out", str(engine), "--min", shape, "--opt", shape,
            "--max", shape] + (["--calib", calib] if precision == "int8" else [])
    if build_main(argv) != 0:
        raise RuntimeError(f"engine build failed: {' '.join(argv)}")
    return engine


def time_engine(path: Path, frame, iters: int, repeats: int) -> tuple[float, float | None]:
    """(median fps, mean VDD_IN watts or None) of the engine on ``frame``."""
    from engine.runtime import Engine
    eng = Engine(path)
    torch = eng.torch
    x = torch.from_numpy(frame.transpose(2, 0, 1)[None].copy()).to(eng.device)
    for _ in range(5):  # warm-up: lazy allocations, clocks ramping
        eng(x)
    torch.cuda.synchronize(eng.device)
    stats = subprocess.Popen(["tegrastats", "--interval", "200"], stdout=subprocess.PIPE, text=True) \
        if shutil.which("tegrastats") else None
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            eng(x)
        torch.cuda.synchronize(eng.device)
        runs.append(iters / (time.perf_counter() - start))
    watts = None
    if stats is not None:
        stats.terminate()
        power = [int(m) for m in re.findall(r"VDD_IN (\d+)mW", stats.communicate(timeout=5)[0])]
        watts = statistics.fmean(power) / 1000 if power else None
    return statistics.median(runs), watts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.jetson_check", description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="realtime,edge,tiny", help="comma-separated (default: %(default)s)")
    ap.add_argument("--precisions", default="fp16,int8", help="fp32, fp16, int8 (default: %(default)s)")
    ap.add_argument("--calib", metavar="DIR", help="LR images for the INT8 calibration (without: no int8 rows)")
    ap.add_argument("--iters", type=int, default=100, help="engine calls per timed run (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs, median kept (default: %(default)s)")
    ap.add_argument("--out", default=str(REPO / "out" / "jetson_check.json"))
    args = ap.parse_args(argv)
    from pipeline.doctor import TEGRA_RELEASE, jetson_release
    if jetson_release() is None:
        print(f"jetson-check: not a Jetson (no {TEGRA_RELEASE}): nothing measured; run `make jetson-check` "
              "on the device (docs/jetson.md) to fill the table")
        return 0
    return measure(args)


def measure(args) -> int:
    from lcoan.safeio import atomic_write, check_writable
    from benchmarks.gpu_fps import mosaic_frame
    from lcoan.data.paths import default_data_root
    out = Path(args.out)
    check_writable(out, what="report")
    info = board()
    frame = mosaic_frame(LR[0], LR[1], default_data_root())
    payload = {"board": info, "lr": list(LR), "scale": 2, "rows": []}
    print(f"jetson-check: {info['module']}, {info['l4t']}; power mode: {info['nvpmodel']}")
    for preset in args.presets.split(","):
        est, mflop = estimate_fps(preset, info["module"])
        for precision in args.precisions.split(","):
            row = {"preset": preset, "precision": precision, "mflop_per_lr_px": round(mflop, 3),
                   "estimate_fps": None if est is None else round(est, 1)}
            if precision == "int8" and not args.calib:
                row["skipped"] = "no --calib DIR"
            else:
                try:
                    fps, watts = time_engine(build(preset, precision, args.calib, out.parent), frame,
                                             args.iters, args.repeats)
                    row.update(fps=round(fps, 2), vdd_in_w=None if watts is None else round(watts, 2))
                except Exception as exc:  # noqa: BLE001 - one failed row is a finding, not the end
                    row["error"] = " ".join(str(exc).split())[:300]
            print(f"  {preset:9s} {precision:5s} " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                            if k not in ("preset", "precision")))
            payload["rows"].append(row)
            atomic_write(out, json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
