"""Named model configurations, timm-style: ``build_model("paper", scale=2)``.

paper  the published LCoAN (about 14.34M parameters at x2, every one used).
edge   for real-time on Jetson-class GPUs: about 10x fewer FLOPs than ``paper``; see the
       FLOP table in docs/benchmarks.md (``python -m benchmarks.flops``).
realtime  for real-time video on Jetson: at most 0.8 MFLOP per LR pixel counted whole,
       attention included (about 0.5), still LSP + CoA; chosen by ``benchmarks.realtime_sweep``.
tiny   for tests: a few thousand parameters, every code path of ``paper``.
"""
from __future__ import annotations

PRESETS: dict[str, dict] = {
    "paper": dict(n_feats=128, n_groups=10, n_blocks=4, n_clusters=128, window_size=384,
                  match_dim=128, res_scale=0.1),
    "edge": dict(n_feats=64, n_groups=5, n_blocks=2, n_clusters=64, window_size=128,
                 match_dim=32, res_scale=0.1),
    # chosen by benchmarks.realtime_sweep: windows of 32 cost less than 64 and trained at
    # least as well on the same CPU budget (docs/benchmarks.md, "The realtime sweep")
    "realtime": dict(n_feats=32, n_groups=4, n_blocks=2, n_clusters=64, window_size=32,
                     match_dim=16, res_scale=0.1),
    "tiny": dict(n_feats=16, n_groups=3, n_blocks=1, n_clusters=8, window_size=16,
                 match_dim=8, res_scale=0.1),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset_config(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list_presets()}")
    return dict(PRESETS[name])
