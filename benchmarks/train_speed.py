"""Training throughput of one recipe under the knobs that should not change its result.

    python -m benchmarks.train_speed [--preset realtime] [--threads 1] [--steps 8]

Each row times optimizer steps (forward, L1 loss, backward, Adam) on random patches, interleaved
round-robin so that a busy machine slows every row alike; the figure is the median step and
the LR pixels per second, relative to the first row. The data pipeline is timed apart: crops
from the cached T91 + BSD200 images (the LR is made once per image, then cached).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from lcoan import build_model
from lcoan.model.reparam import BRANCHES

from .common import machine, print_table, write_json

ALL = ",".join(BRANCHES)
# (name, patch, batch, reparam, channels_last, bf16, compile)
VARIANTS = [
    ("recipe: patch 40, batch 8", 40, 8, "", False, False, False),
    ("reparam, all branches", 40, 8, ALL, False, False, False),
    ("reparam 1x1,identity,sobel,laplacian", 40, 8, "1x1,identity,sobel,laplacian", False, False, False),
    ("reparam 1x1,identity", 40, 8, "1x1,identity", False, False, False),
    ("patch 64, batch 8", 64, 8, "", False, False, False),
    ("reparam all, patch 64", 64, 8, ALL, False, False, False),
    ("channels_last", 40, 8, "", True, False, False),
    ("bf16 autocast", 40, 8, "", False, True, False),
    ("torch.compile", 40, 8, "", False, False, True),
]


class Row:
    def __init__(self, name, patch, batch, reparam, channels_last, bf16, compiled, preset, scale):
        torch.manual_seed(0)
        self.name, self.patch, self.batch, self.bf16 = name, patch, batch, bf16
        self.model = build_model(preset, scale=scale, reparam=reparam).train()
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.fmt)
        self.net = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.lr = torch.rand(batch, 3, patch, patch).contiguous(memory_format=self.fmt)
        self.hr = torch.rand(batch, 3, patch * scale, patch * scale)
        self.times: list[float] = []

    def step(self) -> float:
        start = time.perf_counter()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.l1_loss(self.net(self.lr).float(), self.hr)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start


def data_ms(scale: int, patch: int, batch: int, n: int = 20) -> float:
    from lcoan.data import HROnlyDataset
    from lcoan.data.paths import default_data_root
    root = default_data_root()
    ds = HROnlyDataset([root / "train/T91", root / "train/BSD200"], scale, patch_size=patch, repeat=20)
    for i in range(len(ds.names)):   # fill the LR cache, as the first epoch of a run does
        ds._pair(i)
    start = time.perf_counter()
    for step in range(n):
        for j in range(batch):
            ds[(step * batch + j) % len(ds), step * 1024 + j]
    return (time.perf_counter() - start) / n * 1000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="realtime")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per row (median)")
    ap.add_argument("--only", default="", help="comma-separated row numbers (1-based) to run")
    ap.add_argument("--json", default="out/benchmarks/train_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [VARIANTS[int(i) - 1] for i in args.only.split(",")] if args.only else VARIANTS
    rows = [Row(*v, preset=args.preset, scale=args.scale) for v in chosen]
    for row in rows:   # warm-up (compile happens here)
        row.step()
        row.step()
    for _ in range(args.steps):
        for row in rows:
            row.times.append(row.step())
    base = None
    table = []
    for row in rows:
        ms = statistics.median(row.times) * 1000
        px_s = row.batch * row.patch ** 2 / (ms / 1000)
        base = base or px_s
        table.append({"variant": row.name, "ms_per_step": ms, "lr_px_per_s": px_s, "vs_recipe": px_s / base})
    dm = data_ms(args.scale, 40, 8)
    table.append({"variant": "data: 8 crops of 40 (cached LR)", "ms_per_step": dm})
    print(f"{args.preset} x{args.scale}, {machine()}")
    print_table(table, [("variant", "variant"), ("ms_per_step", "ms / step"), ("lr_px_per_s", "LR px / s"),
                        ("vs_recipe", "throughput vs recipe")])
    write_json(args.json, {"machine": machine(), "preset": args.preset, "rows": table})


if __name__ == "__main__":
    main()
