"""Which LSP setting makes LCoA pay: clusters, window, match dim and the k-means EMA, against the
``attention="none"`` twin, each trained on the same short CPU budget (issue: attention that pays).

    python -m benchmarks.lsp_sweep [--steps 1500] [--parallel 2] [--sets Set5 Urban100] \
        [--json out/benchmarks/lsp_sweep.json]

Every candidate is ``configs/realtime_x2_cos.yaml`` (reparameterised ``realtime``, cosine score,
LR patch 48, batch 8) with one model setting changed, its cosine schedule shortened to
``--steps``. Each trains in its own process with one thread, then is evaluated on ``--sets``
(Y-PSNR, MATLAB-bicubic LR, ``lcoan.evaluate``); a stopped sweep resumes where it was. The table
gives each candidate's PSNR and its gain over the twin, MFLOP per LR pixel and its time per
360p -> 720p frame against the twin's (PyTorch FP32, one thread, best of 3, measured side by
side in one run): the choice is by the Urban100 gain at no more than 1.10x the twin's time. A
short budget ranks candidates; it does not give their final quality.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .common import machine, print_table, write_json
from .sweep import frame_seconds, run_jobs, short_recipe, train_command

CONFIG = "configs/realtime_x2_cos.yaml"
TWIN = "none"
# (name, model overrides of CONFIG); "base" is CONFIG as it is: K 64, w 32, match dim 16, EMA 0.999
CANDIDATES: list[tuple[str, dict]] = [
    (TWIN, dict(attention="none")),
    ("base", {}),
    ("k16", dict(n_clusters=16)),     # larger clusters: more windows inside one cluster
    ("k256", dict(n_clusters=256)),   # smaller clusters: at 48x48 LR about 9 positions each, < w
    ("w16", dict(window_size=16)),    # 3w = 48 keys instead of 96
    ("m32", dict(match_dim=32)),      # a richer embedding for the match (Eq. 9)
    ("ema099", dict(centroid_decay=0.99)),  # centroids that follow the features 10x faster (Eq. 10)
]
TIME_BUDGET = 1.10  # at most this multiple of the twin's time per frame


def _eval_path(out_root: Path, name: str) -> Path:
    return out_root / f"{name}.eval.json"  # beside the run: the trainer owns its folder


def jobs(candidates, steps: int, sets: list[str], out_root: Path) -> list[tuple[str, list[list[str]]]]:
    """Train (unless finished) then evaluate each candidate that has no evaluation yet."""
    result = []
    for name, overrides in candidates:
        if _eval_path(out_root, name).is_file():
            continue
        commands = []
        if not (out_root / name / "final.safetensors").is_file():
            commands.append(train_command(CONFIG, name, [f"model.{k}={v}" for k, v in overrides.items()]
                                          + short_recipe(steps), out_root))
        commands.append([sys.executable, "-m", "lcoan.evaluate", "--weights", str(out_root / name / "final.safetensors"),
                         "--sets", *sets, "--json", str(_eval_path(out_root, name)), "--no-progress", "--device", "cpu"])
        result.append((name, commands))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--parallel", type=int, default=2, help="candidates at once, one thread each")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Urban100"])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[n for n, _ in CANDIDATES],
                        help="these candidates only (default: all)")
    parser.add_argument("--out", default="runs/lsp_sweep")
    parser.add_argument("--json", default="out/benchmarks/lsp_sweep.json")
    args = parser.parse_args(argv)
    candidates = [(n, o) for n, o in CANDIDATES if args.only is None or n in args.only]
    out_root = Path(args.out)
    status = run_jobs(jobs(candidates, args.steps, args.sets, out_root), args.parallel, out_root)
    if any(status.values()):
        return 1

    from lcoan import load_model

    from .flops import mflops_per_pixel
    torch.set_num_threads(1)
    models = {name: load_model(out_root / name / "final.safetensors") for name, _ in candidates}
    seconds = frame_seconds(models)
    scores = {name: json.loads(_eval_path(out_root, name).read_text())["sets"] for name, _ in candidates}
    rows = []
    for name, overrides in candidates:
        row = {"candidate": name, "change": ", ".join(f"{k}={v}" for k, v in overrides.items()) or "—",
               "mflop_px": mflops_per_pixel(models[name]), "time_vs_twin": None}
        if TWIN in models:
            row["time_vs_twin"] = seconds[name] / seconds[TWIN]
        for s in args.sets:
            row[s] = scores[name][s]["model"]["psnr"]
            if TWIN in scores:
                row[f"d_{s}"] = row[s] - scores[TWIN][s]["model"]["psnr"]
        rows.append(row)
    print(f"\n{machine()}; {args.steps} steps each of {CONFIG} (batch 8, LR patch 48, cosine), x2\n")
    columns = [("candidate", "candidate"), ("change", "change"), ("mflop_px", "MFLOP / LR px"),
               ("time_vs_twin", "time / twin's")]
    for s in args.sets:
        columns += [(s, f"{s} PSNR"), (f"d_{s}", f"Δ {s} vs twin")]
    psnr_keys = {key for key, _ in columns[4:]}
    print_table([{k: f"{v:+.3f}" if k.startswith("d_") else f"{v:.3f}" if k in psnr_keys else v
                  for k, v in row.items()} for row in rows], columns)
    write_json(args.json, {"machine": machine(), "steps": args.steps, "config": CONFIG, "sets": args.sets,
                           "time_budget": TIME_BUDGET, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
