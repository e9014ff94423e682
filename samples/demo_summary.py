"""The last step of `make demo`: what the demo made, the parity verdict and the app's speed.

    python samples/demo_summary.py out/

Reads the JSON reports the demo's steps wrote (``parity_fp16.json``, ``app_summary.json``) and
lists the demo's files with their sizes. Exit status 1 when a report is missing or parity failed,
so a broken demo does not end on a cheerful summary.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

MADE = ("lcoan_edge_x2_fp32.onnx", "lcoan_edge_x2_fp16.onnx", "lcoan_edge_x2_fp16.engine",
        "lcoan_edge_x2_fp16.engine.json", "parity_fp16.json", "sample_clip_x2.mp4", "app_summary.json")


def _db(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else str(value)  # JSON writes inf as "inf"


def _rule(t: dict) -> str:
    """The report's rule (verify.parity.Thresholds) in words: elementwise or on a quantile."""
    rule = f"atol {t['atol']:g} / rtol {t['rtol']:g}"
    return rule if t.get("quantile") is None else f"{100 * t['quantile']:g}% of values within {rule}"


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "out")
    status = 0
    print("\nmake demo: summary")
    for name in MADE:
        path = out / name
        size = f"{path.stat().st_size / 1e6:8.2f} MB" if path.is_file() else "  missing"
        status |= not path.is_file()
        print(f"  {size}  {path}")
    try:
        parity = json.loads((out / "parity_fp16.json").read_text())
        s = parity["summary"]
        t = parity["thresholds"]
        print(f"  parity: {'PASS' if s['passed'] else 'FAIL'} ({parity['candidate']} FP16 graph vs "
              f"{parity['reference']} on {s['images']} Set5/Set14 images; min drift {_db(s['min_drift_db'])} dB, "
              f"max abs {s['max_abs']:.1e}, tolerance {_rule(t)})")
        status |= not s["passed"]
        app = json.loads((out / "app_summary.json").read_text())
        print(f"  app: {app['frames_out']} frames, {app['fps']:.2f} fps, {app['backend']} {app['precision']} "
              f"on {app['device']}, model {app['model']} -> {app['output']}")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {out}: a demo report is missing or incomplete ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    return int(bool(status))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
