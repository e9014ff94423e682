"""Time the LCoAClusterSort CUDA kernel against torch.sort(stable=True) on the same GPU.

    python benchmarks/cluster_sort.py [--iters 50] [--out runs/benchmarks/cluster_sort.json]

Both sides produce perm and inv: the kernel in one call (3 launches); torch as clamp + sort(stable=True)
+ scatter for the inverse. Kernel time is measured with cudaEvents inside the ctypes harness, torch time
with torch.cuda.Event; inputs are already on the device, no copies are timed. Without a GPU it says so
and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from export.sort_reference import cluster_sort_reference  # noqa: E402
from plugins import loader  # noqa: E402
from plugins.gpu_check import torch_sort_ms  # noqa: E402

DEFAULT_CASES = [
    # (B, N, K): N = H*W of the feature map the model clusters
    (1, 64 * 64, 128),
    (1, 128 * 128, 128),
    (1, 256 * 256, 128),
    (4, 128 * 128, 128),
    (1, 512 * 512, 128),
    (2, 1_000_000, 128),
    (1, 256 * 256, 1024),
    (1, 256 * 256, 16),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default=str(REPO / "runs" / "benchmarks" / "cluster_sort.json"))
    ap.add_argument("--case", action="append", default=None, help="B,N,K (repeatable); default: a built-in list")
    args = ap.parse_args(argv)

    if loader.cuda_device_count() == 0:
        print("cluster_sort benchmark: no CUDA device visible - nothing to time (needs a GPU).")
        return 0
    lib = loader.harness_library()
    device = loader.harness_device_name(lib)
    try:
        import torch

        have_torch = torch.cuda.is_available()
    except ImportError:
        torch, have_torch = None, False
    if not have_torch:
        print("note: torch with CUDA not available; timing the kernel only")

    cases = [tuple(int(x) for x in c.split(",")) for c in args.case] if args.case else DEFAULT_CASES
    rng = np.random.default_rng(0)
    rows = []
    print(f"device: {device}; iters: {args.iters}")
    print(f"{'B':>4} {'N':>9} {'K':>5} | {'kernel ms':>10} {'torch ms':>10} {'speedup':>8} | ok")
    for b, n, k in cases:
        ids = rng.integers(-2, k + 2, size=(b, n), dtype=np.int32)
        perm, inv, kernel_ms = loader.cluster_sort_gpu(ids, k, timing_iters=args.iters, lib=lib)
        ref_perm, ref_inv = cluster_sort_reference(ids, k)
        ok = bool(np.array_equal(perm, ref_perm) and np.array_equal(inv, ref_inv))
        torch_ms = None
        if have_torch:
            torch_ms, tperm, _ = torch_sort_ms(torch, ids, k, args.iters)
            ok = ok and bool(np.array_equal(tperm, ref_perm))
        speed = f"{torch_ms / kernel_ms:7.2f}x" if torch_ms and kernel_ms > 0 else "    n/a"
        tcol = f"{torch_ms:10.4f}" if torch_ms is not None else f"{'n/a':>10}"
        print(f"{b:>4} {n:>9} {k:>5} | {kernel_ms:10.4f} {tcol} {speed:>8} | {ok}")
        rows.append({"B": b, "N": n, "K": k, "kernel_ms": kernel_ms, "torch_ms": torch_ms, "matches_reference": ok})

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": device, "iters": args.iters, "torch": getattr(torch, "__version__", None),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0 if all(r["matches_reference"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
