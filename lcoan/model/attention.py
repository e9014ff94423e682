"""The attention module of a residual group, one class per role.

Every module maps (features [B, C, H, W], shared pattern or None) to (features, pattern):
a *producer* computes a pattern from its own features and passes it on; a *consumer*
only computes its value embedding and applies the pattern it is given (CoA, Eq. 11-12).

``attention=`` in the model config picks who produces and who consumes (Table I):
  none        no attention
  nla         every group: dense non-local attention (Wang et al.)
  lsp         every group: its own k-means sparse pattern, nothing shared
  nla_shared  group 1: dense attention, shared by every later group
  lcoa        group 1: LSP, shared by every later group (CoA)
"""
from __future__ import annotations

from torch import nn

from .baselines import DenseNonLocalAttention, NoAttention
from .coa import CollaborativeAttention, Pattern
from .lsp import LearnableSparseAttention

ATTENTION_MODES = ("none", "nla", "lsp", "nla_shared", "lcoa")
__all__ = ["ATTENTION_MODES", "Pattern", "build_attention", "CollaborativeAttention", "LearnableSparseAttention",
           "DenseNonLocalAttention", "NoAttention"]


def build_attention(mode: str, group_index: int, channels: int, match_dim: int, num_clusters: int,
                    window_size: int, res_scale: float, centroid_decay: float, score: str = "raw") -> nn.Module:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
    first = group_index == 0
    if mode == "none":
        return NoAttention()
    if mode == "nla" or (mode == "nla_shared" and first):
        return DenseNonLocalAttention(channels, match_dim, res_scale)
    if mode == "lsp" or (mode == "lcoa" and first):
        return LearnableSparseAttention(channels, match_dim, num_clusters, window_size, res_scale,
                                        centroid_decay, score)
    return CollaborativeAttention(channels, res_scale)
