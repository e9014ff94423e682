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

import torch
from torch import Tensor, nn

from . import sort as sort_lib
from .lsp import ClusterCentroids
from .pattern import DensePattern, SparsePattern, dense_pattern, sparse_pattern

ATTENTION_MODES = ("none", "nla", "lsp", "nla_shared", "lcoa")
Pattern = SparsePattern | DensePattern | None


def _rows(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def _image(rows: Tensor, like: Tensor) -> Tensor:
    """[B, H*W, C] -> [B, C, H, W] shaped like ``like``."""
    return rows.transpose(1, 2).reshape(like.shape)


class NoAttention(nn.Module):
    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        return x, pattern


class SharedAttention(nn.Module):
    """Consumer (CoA): O = X + beta * A_s W(X), with A_s from the producer group."""

    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.assembly_conv = nn.Conv2d(channels, channels, 1)
        self.res_scale = res_scale

    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        mixed = pattern.apply(_rows(self.assembly_conv(x)))
        return x + self.res_scale * _image(mixed, x), pattern


class DenseNonLocalAttention(SharedAttention):
    """Producer: dense non-local attention over all H*W positions (O(L^2) memory)."""

    def __init__(self, channels: int, match_dim: int, res_scale: float):
        super().__init__(channels, res_scale)
        self.match_conv = nn.Conv2d(channels, match_dim, 3, padding=1)

    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        return super().forward(x, dense_pattern(_rows(self.match_conv(x))))


class LearnableSparseAttention(SharedAttention):
    """Producer (LSP): cluster, sort, window, and attend to adjacent windows (Eq. 6-9)."""

    def __init__(self, channels: int, match_dim: int, num_clusters: int, window_size: int,
                 res_scale: float, centroid_decay: float):
        super().__init__(channels, res_scale)
        self.match_conv = nn.Conv2d(channels, match_dim, 3, padding=1)
        self.kmeans = ClusterCentroids(num_clusters, match_dim, centroid_decay)
        self.window_size = window_size
        self.sort_fn: sort_lib.ClusterSort = sort_lib.stable_sort

    def compute_pattern(self, x: Tensor) -> SparsePattern:
        queries = _rows(self.match_conv(x))
        ids = self.kmeans(queries)  # detached: the sort is not differentiable, the weights are
        perm, inverse = self.sort_fn(ids, self.kmeans.num_clusters)
        return sparse_pattern(queries, perm, inverse, self.window_size)

    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        return super().forward(x, self.compute_pattern(x))


def build_attention(mode: str, group_index: int, channels: int, match_dim: int, num_clusters: int,
                    window_size: int, res_scale: float, centroid_decay: float) -> nn.Module:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
    first = group_index == 0
    if mode == "none":
        return NoAttention()
    if mode == "nla" or (mode == "nla_shared" and first):
        return DenseNonLocalAttention(channels, match_dim, res_scale)
    if mode == "lsp" or (mode == "lcoa" and first):
        return LearnableSparseAttention(channels, match_dim, num_clusters, window_size, res_scale,
                                        centroid_decay)
    return SharedAttention(channels, res_scale)
