"""The Table I ablations: no attention, dense non-local attention (Wang et al.), and the
dense pattern shared like CoA. LSP-only (every group its own sparse pattern) is
``lsp.LearnableSparseAttention`` in every group; ``attention.build_attention`` picks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .coa import CollaborativeAttention, Pattern, _grid, _rows
from .lsp import unit_keys


class NoAttention(nn.Module):
    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        return x, pattern


@dataclass
class DensePattern:
    """Full non-local attention weights [B, L, L] (Wang et al.), for the ablation baselines."""

    weights: Tensor
    grid: tuple | None = None  # (B, H, W) of the feature map, for exported consumers

    def apply(self, values: Tensor) -> Tensor:
        return self.weights @ values


def dense_pattern(queries: Tensor, grid: tuple | None = None) -> DensePattern:
    keys = unit_keys(queries)
    return DensePattern(torch.softmax(queries @ keys.transpose(-1, -2), dim=-1), grid)


class DenseNonLocalAttention(CollaborativeAttention):
    """Producer: dense non-local attention over all H*W positions (O(L^2) memory)."""

    def __init__(self, channels: int, match_dim: int, res_scale: float):
        super().__init__(channels, res_scale)
        self.match_conv = nn.Conv2d(channels, match_dim, 3, padding=1)

    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        match = self.match_conv(x)
        return super().forward(x, dense_pattern(_rows(match), _grid(match)))
