"""Every GPU-only check of the LCoAClusterSort kernel in one command (``make gpu-check``).

    python3 -m plugins.gpu_check [--out out/gpu_check.json] [--iters 50] [--no-sanitizer] [--no-timing]

Meant for a bare CUDA machine: python3 with numpy and a CUDA build of torch, nvcc, cmake and
compute-sanitizer; no TensorRT and no network (nothing here imports onnx or tensorrt). In order:

1. builds the ctypes harness for the local GPU's architecture (``-Werror``);
2. runs every kernel case of ``tests/test_plugins.py`` (:data:`GPU_CASES`, :data:`ALL_K`, the
   patterns) against the CPU reference ``lcoan.opspec``; guard zones around perm/inv
   catch out-of-bounds writes;
3. runs :data:`SANITIZER_CASES` under ``compute-sanitizer --tool memcheck`` and ``--tool racecheck``;
4. times the kernel against ``torch.sort(stable=True)`` (+ the scatter that makes ``inv``, since
   the kernel returns both) for N in 64x64, 128x128, 270x480, 540x960, K in 64, 128 and B in 1, 4;
5. writes one JSON report (atomically) and prints a table. Exit status 1 if any check failed.

Without a GPU it says so and exits 0. Imports nothing beyond the standard library until a GPU is
found, so it runs under any python3.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "out" / "gpu_check.json"
BUILD_DIR = REPO / "plugins" / "build" / "gpu-check"

GPU_CASES = [
    # (B, N, K)
    (1, 1, 1),
    (3, 1, 128),
    (2, 31, 2),
    (2, 2047, 128),
    (2, 2048, 128),
    (2, 2049, 128),
    (4, 4096, 1),
    (3, 65536, 128),
    (2, 100_003, 1024),
    (1, 250_000, 3),
    (2, 1_000_000, 128),
    (1, 1_000_000, 1024),
    (70_000, 3, 5),  # more rows than one launch's grid.y (65535)
]
ALL_K = (1, 2, 5, 64, 128, 513, 1024)  # uniform ids in [-3, K + 3) over [3, 20000]
SANITIZER_CASES = [(1, 1, 1), (3, 31, 2), (2, 2049, 128), (2, 4099, 1024), (1, 20_000, 64)]
TIMING_SIZES = (("64x64", 64 * 64), ("128x128", 128 * 128), ("270x480", 270 * 480), ("540x960", 540 * 960))
TIMING_K = (64, 128)
TIMING_B = (1, 4)


def tied_ids(rng, batch: int, n: int, k: int, out_of_range: bool = False):
    """Random ids with heavy ties: each row draws from a handful of distinct clusters."""
    import numpy as np

    rows = []
    for _ in range(batch):
        distinct = rng.choice(k, size=min(k, int(rng.integers(1, 9))), replace=False)
        rows.append(rng.choice(distinct, size=n))
    ids = np.stack(rows).astype(np.int32)
    if out_of_range and n > 0:
        mask = rng.random(ids.shape) < 0.1
        bad = rng.choice(np.array([-1, -7, k, k + 5, np.iinfo(np.int32).min, np.iinfo(np.int32).max],
                                  dtype=np.int64), size=ids.shape)
        ids = np.where(mask, bad, ids).astype(np.int32)
    return ids


def case_inputs(b: int, n: int, k: int):
    """The ids of one GPU_CASES entry (the same arrays tests/test_plugins.py uses)."""
    import numpy as np

    return tied_ids(np.random.default_rng(b * 1_000_003 + n * 31 + k), b, n, k, out_of_range=True)


def all_k_inputs(k: int):
    import numpy as np

    return np.random.default_rng(k).integers(-3, k + 3, size=(3, 20_000), dtype=np.int32)


def pattern_inputs():
    import numpy as np

    n = 9000
    ar = np.arange(n, dtype=np.int32)
    return {"zeros": np.zeros((2, n), np.int32), "ascending": np.tile(ar % 128, (2, 1)),
            "descending": np.tile(ar[::-1] % 128, (2, 1))}


def _tool_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if out else None


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for p in (Path("/usr/local/cuda/bin/compute-sanitizer"), Path("/usr/local/cuda/compute-sanitizer/compute-sanitizer")):
        if p.is_file():
            return str(p)
    return None


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def _compare(lib, ids, k: int) -> tuple[bool, str]:
    import numpy as np

    from lcoan.opspec import cluster_sort_reference
    from plugins import loader

    try:
        perm, inv, _ = loader.cluster_sort_gpu(ids, k, lib=lib)
    except RuntimeError as e:
        return False, str(e)
    ref_perm, ref_inv = cluster_sort_reference(ids, k)
    if not np.array_equal(perm, ref_perm):
        bad = np.argwhere(perm != ref_perm)[0]
        return False, f"perm differs first at {tuple(int(x) for x in bad)}"
    if not np.array_equal(inv, ref_inv):
        bad = np.argwhere(inv != ref_inv)[0]
        return False, f"inv differs first at {tuple(int(x) for x in bad)}"
    return True, ""


def run_cases(lib, cases=None, log=print) -> list[dict]:
    """Kernel vs CPU reference for every case; one dict per case."""
    from plugins import loader

    rows = []
    todo = []
    for b, n, k in (cases if cases is not None else GPU_CASES):
        todo.append((f"B={b} N={n} K={k}", lambda b=b, n=n, k=k: case_inputs(b, n, k), k))
    if cases is None:
        for k in ALL_K:
            todo.append((f"all_k K={k} (3x20000, uniform)", lambda k=k: all_k_inputs(k), k))
        for name, ids in pattern_inputs().items():
            todo.append((f"pattern {name} (2x9000, K=128)", lambda ids=ids: ids, 128))
    for label, make, k in todo:
        t0 = time.perf_counter()
        ok, detail = _compare(lib, make(), k)
        rows.append({"case": label, "ok": ok, "detail": detail, "seconds": round(time.perf_counter() - t0, 3)})
        log(f"  {'ok  ' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")
    if cases is None:  # determinism, timing path and argument errors
        ids = tied_ids(__import__("numpy").random.default_rng(0), 2, 50_000, 128)
        a = loader.cluster_sort_gpu(ids, 128, lib=lib)
        b = loader.cluster_sort_gpu(ids, 128, timing_iters=3, lib=lib)
        same = bool((a[0] == b[0]).all() and (a[1] == b[1]).all()) and b[2] > 0.0
        rows.append({"case": "deterministic across runs, timed launches", "ok": same, "detail": "", "seconds": 0.0})
        refused = []
        for bad_k in (0, 1025):
            try:
                loader.cluster_sort_gpu(ids, bad_k, lib=lib)
            except RuntimeError:
                refused.append(bad_k)
        rows.append({"case": "K=0 and K=1025 refused", "ok": refused == [0, 1025], "detail": "", "seconds": 0.0})
        for r in rows[-2:]:
            log(f"  {'ok  ' if r['ok'] else 'FAIL'} {r['case']}")
    return rows


def run_sanitizer(tool: str, sanitizer: str, timeout: int = 180) -> dict:
    """SANITIZER_CASES in a child process under compute-sanitizer; errors make it exit 99."""
    cmd = [sanitizer, "--tool", tool, "--error-exitcode", "99"]
    cmd += [sys.executable, "-m", "plugins.gpu_check", "--sanitizer-child"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "ok": False, "detail": f"timed out after {timeout} s", "seconds": timeout}
    out = (proc.stdout + proc.stderr).strip().splitlines()
    summary = [line for line in out if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
    ok = proc.returncode == 0
    detail = summary[-1].replace("========= ", "") if summary else (out[-1] if out else "")
    if not ok and not summary:
        detail = " | ".join(out[-5:])
    return {"tool": tool, "ok": ok, "returncode": proc.returncode, "detail": detail,
            "cases": [list(c) for c in SANITIZER_CASES], "seconds": round(time.perf_counter() - t0, 1)}


def cuda_ms(torch, fn, iters: int, warmup: int = 3) -> float:
    """Mean milliseconds of ``fn()``: CUDA events around ``iters`` back-to-back calls, after
    ``warmup`` untimed ones (benchmarks/gpu_fps.py times whole models with it too)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / iters


def torch_sort_ms(torch, ids_np, k: int, iters: int):
    ids = torch.from_numpy(ids_np).cuda()
    arange = torch.arange(ids.shape[-1], device=ids.device, dtype=torch.int64).expand_as(ids)

    def run():
        keys = ids.clamp(0, k - 1)
        _, perm = torch.sort(keys, dim=-1, stable=True)
        inv = torch.empty_like(perm)
        inv.scatter_(-1, perm, arange)
        return perm, inv

    perm, inv = run()
    ms = cuda_ms(torch, run, iters)
    return ms, perm.int().cpu().numpy(), inv.int().cpu().numpy()


def run_timing(lib, iters: int, log=print) -> tuple[list[dict], str | None]:
    import numpy as np

    from plugins import loader

    try:
        import torch
        torch_note = None if torch.cuda.is_available() else f"torch {torch.__version__} has no CUDA"
    except ImportError:
        torch, torch_note = None, "torch is not installed"
    rows = []
    rng = np.random.default_rng(0)
    for label, n in TIMING_SIZES:
        for k in TIMING_K:
            for b in TIMING_B:
                ids = rng.integers(0, k, size=(b, n), dtype=np.int32)
                perm, inv, kernel_ms = loader.cluster_sort_gpu(ids, k, timing_iters=iters, lib=lib)
                row = {"size": label, "B": b, "N": n, "K": k, "kernel_ms": round(kernel_ms, 5),
                       "torch_ms": None, "speedup": None, "same_result": None}
                if torch_note is None:
                    torch_ms, tperm, tinv = torch_sort_ms(torch, ids, k, iters)
                    row["torch_ms"] = round(torch_ms, 5)
                    row["speedup"] = round(torch_ms / kernel_ms, 2) if kernel_ms > 0 else None
                    row["same_result"] = bool(np.array_equal(perm, tperm) and np.array_equal(inv, tinv))
                rows.append(row)
                log(f"  {label:>8} B={b} K={k:<4} kernel {kernel_ms:.4f} ms"
                    + (f", torch {row['torch_ms']:.4f} ms" if row["torch_ms"] is not None else ""))
    return rows, torch_note


def print_table(report: dict) -> None:
    dev = report["device"]
    print(f"\nLCoAClusterSort on {dev['name']} (sm {dev['cc']}), {report['timing_iters']} launches each")
    print(f"{'size':>8} {'N':>7} {'B':>2} {'K':>4} | {'kernel ms':>9} {'torch ms':>9} {'torch/kernel':>12} | same")
    for r in report["timing"]:
        t = f"{r['torch_ms']:9.4f}" if r["torch_ms"] is not None else f"{'n/a':>9}"
        s = f"{r['speedup']:11.2f}x" if r["speedup"] is not None else f"{'n/a':>12}"
        same = {True: "yes", False: "NO", None: "-"}[r["same_result"]]
        print(f"{r['size']:>8} {r['N']:>7} {r['B']:>2} {r['K']:>4} | {r['kernel_ms']:9.4f} {t} {s} | {same}")
    cases = report["cases"]
    print(f"kernel vs CPU reference: {sum(c['ok'] for c in cases)}/{len(cases)} cases pass")
    for s in report["sanitizer"]:
        print(f"compute-sanitizer {s['tool']}: {'clean' if s['ok'] else 'FAILED'} ({s['detail']})")


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sanitizer_child() -> int:
    from plugins import loader

    lib = loader.harness_library(build_if_needed=False, build_dir=BUILD_DIR)
    rows = run_cases(lib, SANITIZER_CASES, log=lambda _m: None)
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        print(f"FAIL {r['case']}: {r['detail']}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m plugins.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON report (default: out/gpu_check.json)")
    ap.add_argument("--iters", type=int, default=50, help="timed launches per size")
    ap.add_argument("--no-sanitizer", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--sanitizer-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sanitizer_child:
        return _sanitizer_child()

    from plugins.loader import cuda_devices
    devices = cuda_devices()
    if not devices:
        print("gpu-check: no CUDA GPU visible (the CUDA driver reports none); nothing to run. "
              "Run `make gpu-check` on a machine with an NVIDIA GPU.")
        return 0
    t_start = time.perf_counter()
    dev = devices[0]
    sys.path.insert(0, str(REPO))
    from plugins import build, loader

    print(f"gpu-check on {dev['name']} (sm {dev['cc']})")
    report: dict = {"device": dev, "host": platform.node(), "python": platform.python_version(),
                    "nvcc": _tool_version([build.find_nvcc() or "nvcc", "--version"]),
                    "timing_iters": args.iters, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "cases": [], "sanitizer": [], "timing": [], "notes": []}
    ok = True

    print("1. build the harness")
    t0 = time.perf_counter()
    try:
        res = build.build(arch=[dev["sm"]], harness_only=True, build_dir=BUILD_DIR, werror=True)
    except build.BuildError as e:
        print(f"gpu-check: build failed: {str(e).splitlines()[0]}", file=sys.stderr)
        report["build"] = {"ok": False, "error": str(e)[-2000:]}
        _write_json_atomic(Path(args.out), report | {"ok": False})
        return 1
    report["build"] = {"ok": True, "arch": dev["sm"], "seconds": round(time.perf_counter() - t0, 1),
                       "harness": str(res.harness)}
    lib = loader.harness_library(build_if_needed=False, build_dir=BUILD_DIR)

    print("2. kernel vs CPU reference")
    report["cases"] = run_cases(lib)
    ok &= all(c["ok"] for c in report["cases"])

    if not args.no_sanitizer:
        print("3. compute-sanitizer memcheck and racecheck")
        sanitizer = find_sanitizer()
        if sanitizer is None:
            report["sanitizer"] = [{"tool": t, "ok": False, "detail": "compute-sanitizer not found"}
                                   for t in ("memcheck", "racecheck")]
        else:
            report["sanitizer"] = [run_sanitizer(t, sanitizer) for t in ("memcheck", "racecheck")]
        for s in report["sanitizer"]:
            print(f"  {'ok  ' if s['ok'] else 'FAIL'} {s['tool']}: {s['detail']}")
        ok &= all(s["ok"] for s in report["sanitizer"])

    if not args.no_timing:
        print("4. timing vs torch.sort(stable=True)")
        report["timing"], note = run_timing(lib, args.iters)
        if note:
            report["notes"].append(f"torch timing skipped: {note}")
        ok &= all(r["same_result"] is not False for r in report["timing"])

    report["ok"] = bool(ok)
    report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    _write_json_atomic(Path(args.out), report)
    print_table(report)
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.out}; {'all checks passed' if ok else 'SOME CHECKS FAILED'} in {report['elapsed_s']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
