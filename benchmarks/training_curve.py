"""Validation curves of training runs, read from their train.log files, as one plot and JSON.

    python -m benchmarks.training_curve runs/realtime_x2_rep runs/realtime_none_x2_rep \
        --png docs/training_curve.png

Each run folder's ``train.log`` (lcoan.train) holds ``step N: val Y-PSNR X dB`` lines; a run that was
resumed repeats no step (the log is appended), and a line for a step already seen (a run resumed
from an earlier checkpoint) replaces it. The label of a run is its folder name.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from lcoan.safeio import atomic_write

from .common import print_table, write_json

VAL = re.compile(r"step (\d+): val Y-PSNR ([0-9.]+) dB")


def read_curve(log: Path) -> list[tuple[int, float]]:
    points: dict[int, float] = {}
    for line in log.read_text().splitlines():
        match = VAL.search(line)
        if match:
            points[int(match.group(1))] = float(match.group(2))
    return sorted(points.items())


def plot(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")   # no display on servers and in CI
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, points in curves.items():
        if points:
            ax.plot([s for s, _ in points], [p for _, p in points], marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation Y-PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    print(f"wrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders (train.out), each with a train.log")
    ap.add_argument("--png", default="out/benchmarks/training_curve.png")
    ap.add_argument("--json", default="out/benchmarks/training_curve.json")
    ap.add_argument("--title", default="Set5 (first 5 images), x2, during training")
    args = ap.parse_args(argv)
    curves = {}
    for run in args.runs:
        log = Path(run) / "train.log"
        if not log.is_file():
            raise SystemExit(f"error: {log}: no such training log")
        curves[Path(run).name] = read_curve(log)
    rows = [{"run": name, "points": len(pts), "last_step": pts[-1][0] if pts else None,
             "last_psnr": pts[-1][1] if pts else None, "best_psnr": max(p for _, p in pts) if pts else None}
            for name, pts in curves.items()]
    print_table(rows, [("run", "run"), ("points", "validations"), ("last_step", "last step"),
                       ("last_psnr", "last dB"), ("best_psnr", "best dB")])
    plot(curves, Path(args.png), args.title)
    write_json(args.json, {"curves": {k: [[s, p] for s, p in v] for k, v in curves.items()}, "rows": rows})


if __name__ == "__main__":
    main()
