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
# Windows are processed in blocks of about this many bytes of attention weights. The
# per-window work is small, memory-bound GEMMs; whole-image temporaries (scores, three
# key copies) would cost more in page faults and cache misses than in arithmetic.
BLOCK_BYTES = 1 << 20


def _blockwise(fn, blocks: list[tuple[int, int]], shape: tuple[int, ...], like: Tensor, grad: bool,
               writes_out: bool = False) -> Tensor:
    """fn(a, b) for every block of windows, joined along dim 1 into a tensor of ``shape``.

    With autograd (or a single block) the blocks are concatenated. Without, they are written
    straight into one preallocated tensor, so no whole-image temporary is ever made;
    ``writes_out`` fns take that slice as ``out=`` and fill it themselves.
    """
    if (grad and torch.is_grad_enabled()) or len(blocks) == 1:
        return torch.cat([fn(a, b) for a, b in blocks], dim=1)
    out = like.new_empty(shape)
    for a, b in blocks:
        if writes_out and out.shape[0] == 1:  # a batch of one: the slice is contiguous
            fn(a, b, out=out[:, a:b])
        else:
            out[:, a:b] = fn(a, b)
    return out


def _window_blocks(n_windows: int, window: int) -> list[tuple[int, int]]:
    """[start, stop) window ranges; one block when tracing, so that export sees no loop."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return [(0, n_windows)]
    size = max(1, BLOCK_BYTES // (12 * window * window))  # w x 3w float32 weights per window
    return [(start, min(start + size, n_windows)) for start in range(0, n_windows, size)]


def gather_rows(rows: Tensor, index: Tensor) -> Tensor:
    """rows [B, L, C], index [B, M] -> rows[b, index[b, m]] as [B, M, C].

    One ``index_select`` on the flattened rows: on CPU it is several times faster than
    ``gather`` with an index expanded over C, and it exports as a single ONNX Gather.
    """
    batch, length, channels = rows.shape
    offsets = torch.arange(batch, device=index.device).unsqueeze(1) * length  # [B, 1]
    flat = rows.reshape(batch * length, channels)
    return flat.index_select(0, (index + offsets).reshape(-1)).view(batch, index.shape[1], channels)


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


def with_wrap_windows(slots: Tensor, window: int) -> Tensor:
    """[Lp] padded slots -> [Lp + 2w]: the last window before, the first window after.

    Window i of the padded sequence then finds its previous, own and next window at
    windows i, i+1, i+2 of this sequence: the wrap-around of Eq. 8 without any roll.
    """
    return torch.cat([slots[-window:], slots, slots[:window]])


def adjacent_windows(wrapped: Tensor, window: int) -> Tensor:
    """[B, (W+2)*w, C] wrapped rows -> [B, W, 3w, C], keys in the order [previous, current, next].

    Eagerly this is a strided view (no copy: the three windows are contiguous in memory);
    the ONNX exporter has no strided views, so there it is three slices and a Concat.
    """
    batch, rows, channels = wrapped.shape
    n_windows = rows // window - 2
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        by_window = wrapped.reshape(batch, n_windows + 2, window, channels)
        return torch.cat([by_window[:, :-2], by_window[:, 1:-1], by_window[:, 2:]], dim=2)
    wrapped = wrapped.contiguous()
    return wrapped.as_strided((batch, n_windows, 3 * window, channels),
                              (rows * channels, window * channels, channels, 1))


@dataclass
class SparsePattern:
    """LSP pattern for a batch: which rows each window reads, and with what weights."""

    wrapped_index: Tensor  # [B, (W+2)*w] positions in sorted order, padded, one wrap window each side
    inverse: Tensor        # [B, L] position -> sorted slot (always < L: padding is never read back)
    weights: Tensor        # [B, W, w, 3w] attention weights over keys [previous, current, next]
    window: int

    def apply(self, values: Tensor) -> Tensor:
        """values [B, L, C] -> attended values [B, L, C] (Eq. 12: A_s W(X))."""
        w = self.window
        wrapped = gather_rows(values, self.wrapped_index)                   # [B, (W+2)*w, C]
        batch, n_windows, channels = values.shape[0], self.weights.shape[1], values.shape[-1]
        def block(a: int, b: int, out: Tensor | None = None) -> Tensor:
            return torch.matmul(self.weights[:, a:b], adjacent_windows(wrapped[:, a * w:(b + 2) * w], w), out=out)

        mixed = _blockwise(block, _window_blocks(n_windows, w), (batch, n_windows, w, channels), values,
                           grad=values.requires_grad or self.weights.requires_grad, writes_out=True)  # [B, W, w, C]
        return gather_rows(mixed.reshape(batch, -1, channels), self.inverse)


@dataclass
class DensePattern:
    """Full non-local attention weights [B, L, L] (Wang et al.), for the ablation baselines."""

    weights: Tensor

    def apply(self, values: Tensor) -> Tensor:
        return self.weights @ values


def sparse_pattern(queries: Tensor, perm: Tensor, inverse: Tensor, window: int) -> SparsePattern:
    """Windowed attention weights over the cluster-sorted sequence (Eq. 8-9).

    Queries are the raw embeddings; keys are the same embeddings L2-normalised. Each window
    attends to itself and its two neighbours (with wrap-around); softmax is order-free, so
    keeping the keys in memory order [previous, current, next] changes nothing but speed.
    """
    slots = with_wrap_windows(padded_slot_index(queries.shape[1], window, queries.device), window)
    wrapped_index = perm.index_select(1, slots)                                  # [B, (W+2)*w]
    wrapped = gather_rows(queries, wrapped_index)                                # [B, (W+2)*w, D]
    keys = F.normalize(wrapped, p=2, dim=-1, eps=KEY_NORM_EPS)
    q = wrapped[:, window:-window].reshape(queries.shape[0], -1, window, queries.shape[-1])
    def block(a: int, b: int, out: Tensor | None = None) -> Tensor:
        keys_t = adjacent_windows(keys[:, a * window:(b + 2) * window], window).transpose(-1, -2)
        if out is None:
            return torch.softmax(q[:, a:b] @ keys_t, dim=-1)
        scores = torch.matmul(q[:, a:b], keys_t, out=out)  # softmax in place, block in cache
        scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
        return scores.div_(scores.sum(dim=-1, keepdim=True))

    weights = _blockwise(block, _window_blocks(q.shape[1], window),                 # [B, W, w, 3w]
                         (q.shape[0], q.shape[1], window, 3 * window), queries, grad=queries.requires_grad,
                         writes_out=True)
    return SparsePattern(wrapped_index, inverse, weights, window)


def dense_pattern(queries: Tensor) -> DensePattern:
    keys = F.normalize(queries, p=2, dim=-1, eps=KEY_NORM_EPS)
    return DensePattern(torch.softmax(queries @ keys.transpose(-1, -2), dim=-1))
