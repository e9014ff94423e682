"""ONNX Runtime CPU vs PyTorch eager CPU on the same weights and inputs.

    python -m benchmarks.ort_vs_torch [--weights W | --preset edge] [--sizes 64x64 128x128 180x320]
                                      [--repeats 3] [--threads N] [--json out/ort_vs_torch.json]

PyTorch runs the model as written (``torch.sort(stable=True)``); ONNX Runtime runs the exported
standard-op graph (counting sort). The second table times the counting sort alone at 128^2
and 256^2 LR positions (its memory is O(N K): a [B, N, K] one-hot) against the whole model.
Times are medians in milliseconds.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from export.errors import run_cli

from .common import time_it


def _median_ms(fn, repeats: int, warmup: int = 1) -> float:
    return time_it(fn, repeats, warmup) * 1e3


def _model(args):
    import lcoan
    if args.weights:
        return lcoan.load_model(args.weights)
    torch.manual_seed(args.seed)
    return lcoan.build_model(args.preset, scale=args.scale).eval()


def _sort_graph(num_clusters: int) -> onnx.ModelProto:
    from export.to_onnx import ClusterSortScope

    class SortOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sort_fn = ClusterSortScope()

        def forward(self, ids):
            return self.sort_fn(ids, num_clusters)

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SortOnly(), (torch.zeros(1, 16, dtype=torch.int64),), buf, dynamo=False,
                          opset_version=17, input_names=["ids"], output_names=["perm", "inverse"],
                          dynamic_axes={"ids": {0: "b", 1: "n"}})
    return onnx.load_model_from_string(buf.getvalue())


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    from export import ort_ops
    from export.to_onnx import build_onnx
    from lcoan.model.sort import counting_sort, stable_sort

    parser = argparse.ArgumentParser(prog="python -m benchmarks.ort_vs_torch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights")
    parser.add_argument("--preset", default="edge")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", default=["64x64", "128x128", "180x320"])
    parser.add_argument("--sort-sizes", nargs="+", type=int, default=[128, 256],
                        help="square LR sides for the sort-alone timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default="out/ort_vs_torch.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = _model(args)
    proto = build_onnx(model, sort="onnx")
    sess = ort_ops.session(proto, threads=args.threads)
    rng = np.random.default_rng(args.seed)
    cfg = model.config
    print(f"{args.preset if not args.weights else args.weights} x{cfg.scale}: {model.num_parameters():,} parameters, "
          f"K={cfg.n_clusters}, window={cfg.window_size}; {args.threads} threads, "
          f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")

    rows = []
    print(f"\n{'LR HxW':>9} {'positions':>9} {'torch ms':>9} {'ORT ms':>9} {'ORT/torch':>9} {'max abs':>9}")
    for text in args.sizes:
        h, w = _size(text)
        x = rng.random((1, 3, h, w), dtype=np.float32)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            ref = model(xt).numpy()
            t_torch = _median_ms(lambda: model(xt), args.repeats)
        out = sess.run(None, {"lr": x})[0]
        t_ort = _median_ms(lambda: sess.run(None, {"lr": x}), args.repeats)
        row = dict(lr=[h, w], positions=h * w, torch_ms=t_torch, ort_ms=t_ort, ratio=t_ort / t_torch,
                   max_abs=float(np.abs(out - ref).max()))
        rows.append(row)
        print(f"{h:>4}x{w:<4} {h * w:>9} {t_torch:>9.1f} {t_ort:>9.1f} {row['ratio']:>9.2f} {row['max_abs']:>9.1e}")

    sort_sess = ort_ops.session(_sort_graph(cfg.n_clusters), threads=args.threads)
    sort_rows = []
    print(f"\n{'sort at':>9} {'N':>7} {'one-hot MB':>10} {'ORT sort':>9} {'torch cnt':>9} {'torch sort':>10} "
          f"{'ORT model':>9} {'sort share':>10}")
    for side in args.sort_sizes:
        n = side * side
        ids = rng.integers(0, cfg.n_clusters, size=(1, n)).astype(np.int64)
        ids_t = torch.from_numpy(ids)
        t_sort = _median_ms(lambda: sort_sess.run(None, {"ids": ids}), args.repeats)
        with torch.inference_mode():
            t_cnt = _median_ms(lambda: counting_sort(ids_t, cfg.n_clusters), args.repeats)
            t_stable = _median_ms(lambda: stable_sort(ids_t, cfg.n_clusters), args.repeats)
        x = rng.random((1, 3, side, side), dtype=np.float32)
        t_model = _median_ms(lambda: sess.run(None, {"lr": x}), max(1, args.repeats - 1))
        onehot_mb = n * cfg.n_clusters * 8 / 2**20
        row = dict(side=side, positions=n, onehot_mb=onehot_mb, ort_sort_ms=t_sort, torch_counting_ms=t_cnt,
                   torch_stable_sort_ms=t_stable, ort_model_ms=t_model, sort_share=t_sort / t_model)
        sort_rows.append(row)
        print(f"{side:>4}^2   {n:>7} {onehot_mb:>10.1f} {t_sort:>9.1f} {t_cnt:>9.1f} {t_stable:>10.1f} "
              f"{t_model:>9.1f} {row['sort_share']:>9.1%}")

    result = dict(model=dict(preset=None if args.weights else args.preset, weights=args.weights, **cfg.to_dict()),
                  threads=args.threads, repeats=args.repeats, machine=platform.processor() or platform.machine(),
                  torch=torch.__version__, onnxruntime=__import__("onnxruntime").__version__,
                  model_rows=rows, sort_rows=sort_rows)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
