"""Non-local attention cost: NLA vs LSP vs LCoA (paper preset, x2), side by side, on CPU.

    python -m benchmarks.attention [--sizes 48 96 128 192] [--json out/attention.json]

For each LR size it measures (1) attention only: the ten attention modules of the body,
run in sequence as the model runs them (LCoA: one LSP then nine CoA), and (2) the whole
model's forward. Each measurement runs in a fresh process so that its peak RSS is its own.
Dense NLA needs O(L^2) memory; sizes that would not fit in the available memory are skipped
and reported as such.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from .common import available_bytes, machine, peak_rss_bytes, print_table, rss_bytes, time_it, write_json

MODES = ("nla", "lsp", "lcoa")


def dense_bytes_needed(side: int, groups: int = 1) -> int:
    length = side * side
    return 3 * length * length * 4  # logits, shifted logits, weights (float32)


def measure(mode: str, side: int, what: str, repeats: int) -> dict:
    from lcoan import build_model

    torch.manual_seed(0)
    model = build_model("paper", scale=2, attention=mode).eval()
    if what == "attention":
        feats = torch.randn(1, model.config.n_feats, side, side)

        def run():
            pattern = None
            for group in model.groups:
                _, pattern = group.attention(feats, pattern)
    else:
        lr = torch.rand(1, 3, side, side)

        def run():
            model(lr)

    with torch.no_grad():
        run()  # warm-up, also allocates the steady-state pools
        base = rss_bytes()
        seconds = time_it(run, repeats, warmup=0)
    return {"seconds": seconds, "peak_mb": max(0, peak_rss_bytes() - base) / 2**20}


def _child(args) -> None:
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.mode, args.side, args.what, args.repeats)))


def run_in_child(mode: str, side: int, what: str, repeats: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.attention", "--child", "--mode", mode, "--side", str(side),
           "--what", what, "--repeats", str(repeats), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96, 128, 192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default="out/benchmarks/attention.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    rows, skipped = [], []
    for side in args.sizes:
        row = {"lr": f"{side}x{side}", "positions": side * side}
        for mode in MODES:
            if mode == "nla" and dense_bytes_needed(side) > 0.6 * available_bytes():
                skipped.append(f"nla at {side}x{side}: needs ~{dense_bytes_needed(side) / 2**30:.1f} GiB, "
                               f"{available_bytes() / 2**30:.1f} GiB available")
                continue
            for what, reps in (("attention", args.repeats), ("model", args.model_repeats)):
                result = run_in_child(mode, side, what, reps, args.threads)
                row[f"{mode}_{what}_s"] = result.get("seconds")
                row[f"{mode}_{what}_mb"] = result.get("peak_mb")
                if "error" in result:
                    skipped.append(f"{mode} {what} at {side}x{side}: {result['error']}")
        for base in ("nla", "lsp"):
            if row.get(f"{base}_attention_s") and row.get("lcoa_attention_s"):
                row[f"{base}/lcoa_time"] = row[f"{base}_attention_s"] / row["lcoa_attention_s"]
            if row.get(f"{base}_attention_mb") and row.get("lcoa_attention_mb"):
                row[f"{base}/lcoa_mem"] = row[f"{base}_attention_mb"] / max(row["lcoa_attention_mb"], 1e-9)
        rows.append(row)
        print(f"[{side}x{side}] done", file=sys.stderr)

    print(f"\nAttention only (10 modules of the paper preset, x2), {machine()}\n")
    print_table(rows, [("lr", "LR"), ("nla_attention_s", "NLA s"), ("lsp_attention_s", "LSP s"),
                       ("lcoa_attention_s", "LCoA s"), ("nla/lcoa_time", "NLA/LCoA time"),
                       ("lsp/lcoa_time", "LSP/LCoA time"), ("nla_attention_mb", "NLA MB"),
                       ("lsp_attention_mb", "LSP MB"), ("lcoa_attention_mb", "LCoA MB"),
                       ("nla/lcoa_mem", "NLA/LCoA mem")])
    print("\nWhole model forward\n")
    print_table(rows, [("lr", "LR"), ("nla_model_s", "NLA s"), ("lsp_model_s", "LSP s"),
                       ("lcoa_model_s", "LCoA s"), ("nla_model_mb", "NLA MB"), ("lsp_model_mb", "LSP MB"),
                       ("lcoa_model_mb", "LCoA MB")])
    for line in skipped:
        print(f"skipped: {line}")
    write_json(args.json, {"machine": machine(), "rows": rows, "skipped": skipped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
