"""The sweep that chose the ``realtime`` preset: width, depth, window and match dim under the
0.8 MFLOP per LR pixel budget, each trained on the same short CPU budget.

    python -m benchmarks.realtime_sweep [--steps 1200] [--parallel 2] [--json out/benchmarks/realtime_sweep.json]

Each candidate trains with ``configs/realtime_x2_291.yaml`` (shortened to ``--steps``, no LR
decay) in its own process with one thread, then reports parameters, MFLOP per LR pixel
(``benchmarks.flops``), PyTorch CPU fps at 360p -> 720p (one thread, min of 3), and Set5/Set14
Y-PSNR (``lcoan.evaluate``). The short budget ranks the candidates; it does not give their
final quality.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .common import machine, print_table, write_json
from .sweep import frame_seconds, run_jobs, short_recipe, train_command

# (name, model overrides); 32f-4g2b-w32-m16 is the preset as shipped
CANDIDATES: list[tuple[str, dict]] = [
    ("32f-4g2b-w64-m16", dict(n_feats=32, n_groups=4, n_blocks=2, window_size=64, match_dim=16)),
    ("32f-4g2b-w32-m16", dict(n_feats=32, n_groups=4, n_blocks=2, window_size=32, match_dim=16)),
    ("32f-4g2b-w64-m8", dict(n_feats=32, n_groups=4, n_blocks=2, window_size=64, match_dim=8)),
    ("40f-3g2b-w64-m16", dict(n_feats=40, n_groups=3, n_blocks=2, window_size=64, match_dim=16)),
    ("32f-6g1b-w64-m16", dict(n_feats=32, n_groups=6, n_blocks=1, window_size=64, match_dim=16)),
    # the shipped preset without attention, on the same budget: what LSP + CoA buy
    ("32f-4g2b-none", dict(n_feats=32, n_groups=4, n_blocks=2, attention="none")),
]
CONFIG = "configs/realtime_x2_291.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once, one thread each")
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--json", default="out/benchmarks/realtime_sweep.json")
    args = parser.parse_args(argv)
    out_root = Path(args.out)
    jobs = [(name, [train_command(CONFIG, name, [f"model.{k}={v}" for k, v in overrides.items()]
                                  + short_recipe(args.steps) + ["train.milestones=[]"], out_root)])
            for name, overrides in CANDIDATES if not (out_root / name / "final.safetensors").is_file()]
    run_jobs(jobs, args.parallel, out_root)

    from lcoan import build_model, load_model
    from lcoan.evaluate import evaluate

    from .flops import mflops_per_pixel
    torch.set_num_threads(1)
    rows = []
    for name, overrides in CANDIDATES:
        weights = out_root / name / "final.safetensors"
        if not weights.is_file():
            continue
        model = load_model(weights)
        scores = evaluate(model, sets=["Set5", "Set14"], progress=False)
        none = build_model("realtime", scale=2, **{**overrides, "attention": "none"}).eval()
        seconds = frame_seconds({"lcoa": model, "none": none})
        rows.append({"candidate": name, "params_k": model.num_parameters() / 1e3,
                     "mflop_px": mflops_per_pixel(model), "fps_360p": 1 / seconds["lcoa"],
                     "fps_360p_none": 1 / seconds["none"],
                     "set5": scores["sets"]["Set5"]["model"]["psnr"],
                     "set14": scores["sets"]["Set14"]["model"]["psnr"]})
    print(f"\n{machine()}; {args.steps} steps each (batch 8, LR patch 40, T91+BSD200), x2\n")
    print_table(rows, [("candidate", "candidate"), ("params_k", "params (k)"), ("mflop_px", "MFLOP/LR px"),
                       ("fps_360p", "CPU fps 360p->720p"), ("fps_360p_none", "same, attention=none"),
                       ("set5", "Set5 PSNR"), ("set14", "Set14 PSNR")])
    write_json(args.json, {"machine": machine(), "steps": args.steps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
