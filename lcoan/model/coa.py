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
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def _image(rows: Tensor, like: Tensor) -> Tensor:
    """[B, H*W, C] -> [B, C, H, W] shaped like ``like``."""
    batch, channels, height, width = like.shape
    return rows.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def _grid(x: Tensor) -> tuple:
    """(B, H, W) of an NCHW map; patterns carry it so that exported consumers never read a Shape."""
    return x.shape[0], x.shape[2], x.shape[3]


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class CollaborativeAttention(nn.Module):
    """Consumer (CoA): O = X + beta * A_s W(X), with A_s from the producer group."""

    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.assembly_conv = nn.Conv2d(channels, channels, 1)
        self.res_scale = res_scale

    def forward(self, x: Tensor, pattern: Pattern | None) -> tuple[Tensor, Pattern | None]:
        if _exporting():
            return self._graph_forward(x, pattern), pattern
        mixed = pattern.apply(_rows(self.assembly_conv(x)))
        return torch.add(x, _image(mixed, x), alpha=self.res_scale), pattern  # one pass, no temporary

    def _graph_forward(self, x: Tensor, pattern: Pattern) -> Tensor:
        """The same O, written for graph runtimes (ONNX).

        Each layout change is a 4-D NCHW <-> NHWC transpose right after or right before a
        convolution, which ONNX Runtime folds into its NCHWc reorders, and the residual add runs
        on rows. Shapes come from the pattern's grid and the static channel count: a Shape of a
        feature map would make ONNX Runtime keep an extra NCHW copy of it.
        """
        batch, height, width = getattr(pattern, "grid", None) or _grid(x)
        channels = self.assembly_conv.out_channels

        def rows(t: Tensor) -> Tensor:
            return t.permute(0, 2, 3, 1).reshape(batch, height * width, channels)

        out = torch.add(rows(x), pattern.apply(rows(self.assembly_conv(x))), alpha=self.res_scale)
        return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
