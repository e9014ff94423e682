"""Attention patterns: computed once, applied by every group that shares them (CoA).

A pattern holds everything a group needs to mix its value features ``W_m(X_m)``
without recomputing similarity: the gather index, the inverse permutation and the
attention weights (paper Eq. 11-12: O_m = X_m + beta * A_s W_m(X_m)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KEY_NORM_EPS = 5e-5  # the public model's eps for L2-normalised keys


def gather_rows(rows: Tensor, index: Tensor) -> Tensor:
    """rows [B, L, C], index [B, M] -> rows[b, index[b, m]] as [B, M, C]."""
    return rows.gather(1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))


def padded_slot_index(length: int, window: int, device: torch.device) -> Tensor:
    """Slot j of the padded sorted sequence reads sorted slot src[j].

    The sequence is padded to a whole number of windows by repeating its LAST rows, as
    the public model does (``x[-p:]`` appended). When the padding is longer than the
    sequence itself (inputs smaller than one window), the sequence is repeated
    cyclically, aligned so that the padded tail still ends with the last row; for
    p <= L this is exactly the public model's rule.
    """
    n_windows = (length + window - 1) // window
    padded = n_windows * window
    j = torch.arange(padded, device=device)
    tail = (length - 1) - torch.remainder((padded - 1) - j, length)
    return torch.where(j < length, j, tail)


def to_windows(rows: Tensor, window: int) -> Tensor:
    """[B, Lp, C] -> [B, n_windows, window, C]."""
    return rows.reshape(rows.shape[0], -1, window, rows.shape[-1])


def with_adjacent_windows(windows: Tensor) -> Tensor:
    """Each window sees itself, the previous and the next one, with wrap-around.

    Key order [current, previous, next], as in the public model. [B, W, w, C] -> [B, W, 3w, C].
    """
    return torch.cat([windows, windows.roll(1, dims=1), windows.roll(-1, dims=1)], dim=2)


def softmax_by_logsumexp(scores: Tensor) -> Tensor:
    """exp(s - logsumexp(s)): the public model's softmax (Eq. 9), numerically identical."""
    return torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))


@dataclass
class SparsePattern:
    """LSP pattern for a batch: which rows each window reads, and with what weights."""

    gather_index: Tensor  # [B, Lp] positions, in sorted order, padded by repetition
    inverse: Tensor       # [B, L] position -> sorted slot (always < L: padding is never read back)
    weights: Tensor       # [B, n_windows, w, 3w] attention weights
    window: int

    def apply(self, values: Tensor) -> Tensor:
        """values [B, L, C] -> attended values [B, L, C] (Eq. 12)."""
        windows = to_windows(gather_rows(values, self.gather_index), self.window)
        mixed = self.weights @ with_adjacent_windows(windows)  # [B, W, w, C]
        mixed = mixed.reshape(values.shape[0], -1, values.shape[-1])
        return gather_rows(mixed, self.inverse)


@dataclass
class DensePattern:
    """Full non-local attention weights [B, L, L] (Wang et al.), for the ablation baselines."""

    weights: Tensor

    def apply(self, values: Tensor) -> Tensor:
        return self.weights @ values


def sparse_pattern(queries: Tensor, perm: Tensor, inverse: Tensor, window: int) -> SparsePattern:
    """Windowed attention weights over the cluster-sorted sequence (Eq. 8-9).

    Queries are the raw embeddings; keys are the same embeddings L2-normalised.
    """
    slots = padded_slot_index(queries.shape[1], window, queries.device)
    gather_index = perm.gather(1, slots.unsqueeze(0).expand(perm.shape[0], -1))
    q = to_windows(gather_rows(queries, gather_index), window)
    k = with_adjacent_windows(F.normalize(q, p=2, dim=-1, eps=KEY_NORM_EPS))
    weights = softmax_by_logsumexp(q @ k.transpose(-1, -2))
    return SparsePattern(gather_index, inverse, weights, window)


def dense_pattern(queries: Tensor) -> DensePattern:
    keys = F.normalize(queries, p=2, dim=-1, eps=KEY_NORM_EPS)
    return DensePattern(softmax_by_logsumexp(queries @ keys.transpose(-1, -2)))
