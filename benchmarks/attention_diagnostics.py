"""What the learned sparse pattern does on real images, and what the network loses without it.

    python -m benchmarks.attention_diagnostics --weights realtime_x2 --sets Urban100 Set5 \
        --json out/benchmarks/attention_diagnostics.json

The first step of "find out why" when LCoA does not beat its attention="none" twin: every number
here comes from trained weights on benchmark images (LR made from HR by the MATLAB bicubic), with
no training. Per weights and set:

pattern, read from the producer (LSP) on every image, over a sample of its windows:
  clusters used    centroids that hold at least one position (k-means health, Eq. 10)
  balance          normalised entropy of the cluster sizes (1: equal clusters, 0: one cluster)
  pos/cluster      positions per used cluster, to compare with the window w (Eq. 8)
  same cluster     share of a query's 3w keys in its own cluster (windows cut across clusters
                   when clusters are smaller than w)
  key distance     attention-weighted median distance in LR pixels from a query to its keys
  local mass       attention mass on keys within 3 LR pixels, which a few 3x3 convs see anyway
  weight entropy   normalised entropy of a query's weights over its 3w keys (1: a plain mean)

Y-PSNR change at inference, the same weights (dB, against the unchanged model):
  knockout         every CoA output replaced by its input (Eq. 12 with beta * A_s W(X) = 0)
  shuffled         positions shuffled inside each cluster before the windows are cut: the same
                   clusters, but windows that are no longer raster runs (the stable sort keeps
                   raster order inside a cluster, so a window of one large cluster is a strip of
                   nearby pixels)
  window x2, /2    the window w at inference doubled or halved
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from .common import machine, print_table, write_json

SAMPLE_WINDOWS = 256   # windows per image the pattern statistics are read from
LOCAL_RADIUS = 3       # LR pixels


def _modules(model):
    from lcoan.model.coa import CollaborativeAttention
    from lcoan.model.lsp import LearnableSparseAttention
    producers = [m for m in model.modules() if isinstance(m, LearnableSparseAttention)]
    return producers, [m for m in model.modules() if isinstance(m, CollaborativeAttention)]


def shuffled_sort(seed: int = 0):
    """A cluster sort that keeps the clusters and shuffles the positions inside each one."""
    from lcoan.model.sort import inverse_permutation

    def sort(ids: torch.Tensor, num_clusters: int):
        length = ids.shape[-1]
        rank = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).to(ids.device)
        perm = torch.sort(ids * length + rank, dim=-1).indices
        return perm, inverse_permutation(perm)
    return sort


def pattern_stats(ids: torch.Tensor, pattern, width: int, num_clusters: int, rng: np.random.Generator) -> dict:
    """The statistics of one image's pattern (batch of one), over a sample of its full windows."""
    from lcoan.model.lsp import neighbour_index
    w = pattern.window
    ids = ids[0]
    length = ids.shape[0]
    sizes = torch.bincount(ids, minlength=num_clusters).double()
    used = sizes[sizes > 0]
    p = used / used.sum()
    balance = float(-(p * p.log()).sum() / math.log(num_clusters)) if num_clusters > 1 else 1.0
    n_full = length // w                       # windows with no padded rows
    pick = torch.from_numpy(rng.choice(n_full, size=min(SAMPLE_WINDOWS, n_full), replace=False))
    queries = pattern.wrapped_index[0, w:-w].reshape(-1, w)[pick]                          # [S, w]
    keys = neighbour_index(pattern.wrapped_index, w)[0].reshape(-1, 3 * w)[pick]           # [S, 3w]
    weights = pattern.weights[0, pick].double()                                            # [S, w, 3w]
    qy, qx = (queries // width).double(), (queries % width).double()
    ky, kx = (keys // width).double(), (keys % width).double()
    dist = torch.hypot(qy[..., None] - ky[:, None, :], qx[..., None] - kx[:, None, :])       # [S, w, 3w]
    same = (ids[queries][..., None] == ids[keys][:, None, :]).double()
    order = dist.reshape(-1, 3 * w).sort(dim=-1)
    cdf = weights.reshape(-1, 3 * w).gather(1, order.indices).cumsum(-1)
    median = order.values.gather(1, (cdf < 0.5).sum(-1, keepdim=True).clamp_max(3 * w - 1))
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1) / math.log(3 * w)
    return {"clusters_used": int(used.numel()), "balance": balance, "pos_per_cluster": float(length / used.numel()),
            "same_cluster": float(same.mean()), "key_distance": float(median.median()),
            "local_mass": float((weights * (dist <= LOCAL_RADIUS)).sum(-1).mean()),
            "weight_entropy": float(entropy.mean())}


class _Recorder:
    """Wraps the producer's compute_pattern: keeps each pattern's statistics while its weights are live."""

    def __init__(self, producer, rng):
        self.producer, self.rng, self.rows = producer, rng, []
        self.original = producer.compute_pattern

        def compute(x, values=None):
            pattern = self.original(x, values)
            ids = producer.kmeans(producer_queries(producer, x))
            self.rows.append(pattern_stats(ids, pattern, x.shape[-1], producer.kmeans.num_clusters, self.rng))
            return pattern
        producer.compute_pattern = compute

    def close(self):
        self.producer.compute_pattern = self.original


def producer_queries(producer, x: torch.Tensor) -> torch.Tensor:
    from lcoan.model.coa import _rows
    return _rows(producer.match_conv(x))


@torch.no_grad()
def diagnose_set(model, folder: Path, scale: int, limit: int | None, seed: int = 0) -> dict:
    """Mean pattern statistics and PSNR changes of ``model`` on the HR images of ``folder``."""
    from lcoan.data.datasets import HROnlyDataset
    from lcoan.metrics import psnr_y
    producers, attention = _modules(model)
    if not producers:
        raise SystemExit("the model has no LSP producer (attention='none' or a dense baseline): nothing to diagnose")
    producer = producers[0]
    data = HROnlyDataset(folder / "HR", scale, train=False, augment=False)
    n = len(data) if limit is None else min(limit, len(data))
    rng = np.random.default_rng(seed)
    recorder = _Recorder(producer, rng)
    deltas: dict[str, list[float]] = {"knockout": [], "shuffled": [], "window_x2": [], "window_half": []}
    base_psnr = []
    try:
        for i in range(n):
            lr, hr = data[i]
            x = lr[None]
            base = psnr_y(model(x)[0].clamp(0, 1), hr, shave=scale)
            base_psnr.append(base)
            recording, producer.compute_pattern = producer.compute_pattern, recorder.original
            for name, variant in _variants(producer, attention):   # the variants add no statistics
                with variant:
                    deltas[name].append(psnr_y(model(x)[0].clamp(0, 1), hr, shave=scale) - base)
            producer.compute_pattern = recording
    finally:
        recorder.close()
    stats = {k: float(np.mean([r[k] for r in recorder.rows])) for k in recorder.rows[0]}
    return {"images": n, "psnr": float(np.mean(base_psnr)), "window": producer.window_size,
            "clusters": producer.kmeans.num_clusters, **stats,
            **{f"d_{k}": float(np.mean(v)) for k, v in deltas.items()},
            "knockout_worst": float(np.max(deltas["knockout"]))}


class _Patch:
    """Sets attributes on enter, restores them on exit."""

    def __init__(self, changes: list[tuple[object, str, object]]):
        self.changes, self.saved = changes, []

    def __enter__(self):
        self.saved = [(obj, name, getattr(obj, name)) for obj, name, _ in self.changes]
        for obj, name, value in self.changes:
            setattr(obj, name, value)

    def __exit__(self, *exc):
        for obj, name, value in self.saved:
            setattr(obj, name, value)


def _variants(producer, attention):
    def identity(x, pattern):
        return x, pattern
    return [("knockout", _Patch([(m, "forward", identity) for m in attention])),
            ("shuffled", _Patch([(producer, "sort_fn", shuffled_sort())])),
            ("window_x2", _Patch([(producer, "window_size", producer.window_size * 2)])),
            ("window_half", _Patch([(producer, "window_size", max(1, producer.window_size // 2))]))]


COLUMNS = [("weights", "weights"), ("set", "set"), ("images", "images"), ("psnr", "Y-PSNR"),
           ("clusters_used", "clusters used"), ("balance", "balance"), ("pos_per_cluster", "pos/cluster"),
           ("window", "w"), ("same_cluster", "same cluster"), ("key_distance", "key distance (px)"),
           ("local_mass", "local mass"), ("weight_entropy", "weight entropy"), ("d_knockout", "Δ knockout"),
           ("knockout_worst", "Δ knockout, best image"), ("d_shuffled", "Δ shuffled"),
           ("d_window_x2", "Δ w x2"), ("d_window_half", "Δ w /2")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=["realtime_x2"], metavar="NAME|FILE",
                    help="weights-table names or files (training checkpoints too) (default: realtime_x2)")
    ap.add_argument("--sets", nargs="+", default=["Urban100", "Set5"])
    ap.add_argument("--limit", type=int, default=None, help="at most this many images per set (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default="out/benchmarks/attention_diagnostics.json")
    args = ap.parse_args(argv)
    import lcoan
    from lcoan.evaluate import default_benchmark_root
    if args.threads:
        torch.set_num_threads(args.threads)
    root = default_benchmark_root()
    rows = []
    for weights in args.weights:
        model = lcoan.load_model(lcoan.resolve_weights(weights, None)).eval()
        for name in args.sets:
            row = {"weights": Path(weights).stem if Path(weights).suffix else weights, "set": name}
            row |= diagnose_set(model, root / name, model.scale, args.limit)
            rows.append(row)
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                write_json(args.json, {"machine": machine(), "rows": rows, "done": False})
    print(f"\n{machine()}")
    table = print_table(rows, COLUMNS)
    if args.json:
        write_json(args.json, {"machine": machine(), "rows": rows, "table": table, "done": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
