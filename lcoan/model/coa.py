"""Collaborative Attention (paper Sec. III-C, Eq. 11-12): apply a shared pattern.

The first residual group computes the sparse pattern and its weights once (LSP, ``lsp.py``);
every later group only embeds its own values and mixes them with those weights:

    O_m = X_m + beta * A_s W_m(X_m)                                             (Eq. 12)

so later groups run no k-means, no sort and no similarity. A pattern is any object with
``apply(values [B, L, C]) -> [B, L, C]``: ``lsp.SparsePattern`` for LCoA, the dense
baselines' ``DensePattern`` for the Table I ablations (``baselines.py``).
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn


class Pattern(Protocol):
    def apply(self, values: Tensor) -> Tensor: ...


def _rows(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def _image(rows: Tensor, like: Tensor) -> Tensor:
    """[B, H*W, C] -> [B, C, H, W] shaped like ``like``."""
    return rows.transpose(1, 2).reshape(like.shape)


class CollaborativeAttention(nn.Module):
    """Consumer (CoA): O = X + beta * A_s W(X), with A_s from the producer group."""

    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.assembly_conv = nn.Conv2d(channels, channels, 1)
        self.res_scale = res_scale

    def forward(self, x: Tensor, pattern: Pattern | None) -> tuple[Tensor, Pattern | None]:
        mixed = pattern.apply(_rows(self.assembly_conv(x)))
        return torch.add(x, _image(mixed, x), alpha=self.res_scale), pattern  # one pass, no temporary
