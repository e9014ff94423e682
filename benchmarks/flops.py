"""FLOPs and parameters of the presets, counted by torch.utils.flop_counter.

    python -m benchmarks.flops [--lr 128x128 270x480] [--json out/flops.json]
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from lcoan import build_model, list_presets

from .common import print_table, write_json


def count_gflops(preset: str, scale: int, h: int, w: int, attention: str = "lcoa") -> float:
    model = build_model(preset, scale=scale, attention=attention).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.rand(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def mflops_per_pixel(model, h: int = 90, w: int = 160) -> float:
    """Whole-model MFLOP per LR pixel, attention included (FLOPs grow ~linearly with pixels)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.rand(1, 3, h, w))
    return counter.get_total_flops() / 1e6 / (h * w)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", nargs="+", default=["128x128", "270x480"])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--json", default="out/benchmarks/flops.json")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.lr]
    rows = []
    for preset in ("paper", "edge", "realtime", "tiny"):
        row = {"preset": preset, "params_M": build_model(preset, scale=args.scale).num_parameters() / 1e6}
        for h, w in sizes:
            row[f"gflops_{h}x{w}"] = count_gflops(preset, args.scale, h, w)
        rows.append(row)
    for row in rows:
        for h, w in sizes:
            row[f"paper/x_{h}x{w}"] = rows[0][f"gflops_{h}x{w}"] / row[f"gflops_{h}x{w}"]
    cols = [("preset", "preset"), ("params_M", "params (M)")]
    for h, w in sizes:
        cols += [(f"gflops_{h}x{w}", f"GFLOPs @ {h}x{w} LR"), (f"paper/x_{h}x{w}", f"paper / preset @ {h}x{w}")]
    print(f"x{args.scale}, FLOPs = 2 x multiply-adds, counted by torch.utils.flop_counter\n")
    print_table(rows, cols)
    write_json(args.json, {"scale": args.scale, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
