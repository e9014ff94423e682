"""Collaborative Attention (paper Sec. III-C, Eq. 11-12): apply a shared pattern.

The first residual group computes the sparse pattern and its weights once (LSP, ``lsp.py``);
every later group only embeds its own values and mixes them with those weights:

    O_m = X_m + beta * A_s W_m(X_m)                                             (Eq. 12)

so later groups run no k-means, no sort and no similarity. A pattern is any object with
``apply(values [B, L, C]) -> [B, L, C]``: ``lsp.SparsePattern`` for LCoA, the dense
baselines' ``DensePattern`` for the Table I ablations (``baselines.py``).
"""
from __future__ import annotations

import math
import threading
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native


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


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


# A transposing add (NCHW map plus NHWC rows) runs in blocks of image rows of about this many
# bytes: one pass over whole maps reads across channels out of cache.
TRANSPOSE_BLOCK_BYTES = 1 << 19
# A gather fused with the residual add runs in blocks of about this many bytes of gathered rows
# (edge, 270x480, NCHW: 15 ms a group against 20 for a whole gather then a blocked add).
GATHER_BLOCK_BYTES = 1 << 20


def _add_scaled(x: Tensor, rows_view: Tensor, alpha: float) -> Tensor:
    """x + alpha * rows_view in one pass; ``rows_view`` is NHWC in memory, ``x`` NCHW or NHWC.

    When the layouts differ (an NCHW model on CPU), the add goes block by block: 12 ms instead
    of 47 ms for 64 channels at 270x480.
    """
    batch, channels, height, width = x.shape
    if (x.device.type != "cpu" or torch.is_grad_enabled() or not x.is_contiguous()
            or rows_view.is_contiguous()):
        return torch.add(x, rows_view, alpha=alpha)
    out = torch.empty_like(x)
    step = max(1, TRANSPOSE_BLOCK_BYTES // (batch * channels * width * x.element_size()))
    for top in range(0, height, step):
        rows = slice(top, top + step)
        torch.add(x[:, :, rows], rows_view[:, :, rows], alpha=alpha, out=out[:, :, rows])
    return out


def _add_gathered(x: Tensor, rows: Tensor, index: Tensor, alpha: float) -> Tensor:
    """x + alpha * rows[b, index[b]] laid out as x: rows [B, M, C], index [B, H*W] (CPU inference).

    The gather and the add go together, block by block of positions, so the gathered rows are
    added while still in cache instead of being written out whole and read back. For an NCHW
    ``x`` the add transposes each block as it goes (see ``_add_scaled``).
    """
    fast = native.gather_add(x, rows, index, alpha)
    if fast is not None:
        return fast
    batch, channels, height, width = x.shape
    length = height * width
    out = torch.empty_like(x)
    step = max(1, GATHER_BLOCK_BYTES // (channels * x.element_size()))
    buf = rows.new_empty(min(step, length), channels)
    nhwc = not x.is_contiguous()  # callers pass NCHW- or NHWC-contiguous maps only
    for b in range(batch):
        if nhwc:
            src, dst = x[b].permute(1, 2, 0).reshape(length, channels), out[b].permute(1, 2, 0).view(length, channels)
        else:
            src, dst = x[b].view(channels, length).t(), out[b].view(channels, length).t()
        for start in range(0, length, step):
            stop = min(start + step, length)
            gathered = torch.index_select(rows[b], 0, index[b, start:stop], out=buf[:stop - start])
            torch.add(src[start:stop], gathered, alpha=alpha, out=dst[start:stop])
    return out


class Workspace:
    """Reused CPU buffers for the attention's large temporaries in inference, one set per thread.

    A fresh tensor of tens of MB comes straight from ``mmap``, and the first touch of each of its
    pages is a fault: for ``edge`` at 270x480 the weights (200 MB) and the four row buffers of a
    group with PyTorch ops (33 MB each; the native kernels need two) cost about 80 ms in the
    producer and 40 ms per group in faults alone. Not
    used under autograd (saved tensors must not be overwritten), off CPU (the caching allocator
    already reuses memory) or in export. A thread's set lives as long as the thread and the
    model (a pool of N threads running one model holds N sets); copies and pickles start empty.
    """

    def __init__(self):
        self._local = threading.local()

    def __reduce__(self):
        return Workspace, ()

    def names(self) -> set[str]:
        """The buffers this thread holds."""
        return set(getattr(self._local, "buffers", {}))

    @staticmethod
    def usable(like: Tensor) -> bool:
        # not under autocast either: it skips ops given out=, whose dtypes would then not match
        return (like.device.type == "cpu" and not torch.is_grad_enabled() and not _exporting()
                and not _cpu_autocast())

    def take(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` (``like``'s dtype and device) that stays this
        thread's ``name`` buffer until the next call with the same name."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        numel = math.prod(shape)
        buf = buffers.get(name)
        # a buffer made under inference_mode cannot be written outside it, nor the reverse
        if (buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device
                or buf.is_inference() != torch.is_inference_mode_enabled()):
            buf = buffers[name] = like.new_empty(numel)
        return buf[:numel].view(shape)


class CollaborativeAttention(nn.Module):
    """Consumer (CoA): O = X + beta * A_s W(X), with A_s from the producer group."""

    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.assembly_conv = nn.Conv2d(channels, channels, 1)
        self.res_scale = res_scale

    def forward(self, x: Tensor, pattern: Pattern | None) -> tuple[Tensor, Pattern | None]:
        if _exporting():
            return self._graph_forward(x, pattern), pattern
        return self._attend(x, pattern, self._values(x, getattr(pattern, "workspace", None))), pattern

    def _attend(self, x: Tensor, pattern: Pattern, values: Tensor) -> Tensor:
        """X + beta * A_s W(X) (Eq. 12), laid out as x; ``values`` is W(X) as rows."""
        add_applied = getattr(pattern, "add_applied", None)
        if add_applied is not None:
            return add_applied(values, x, self.res_scale)
        return _add_scaled(x, _image(pattern.apply(values), x), self.res_scale)

    def _values(self, x: Tensor, workspace: Workspace | None) -> Tensor:
        """W(X) of Eq. 12 as rows [B, H*W, C]: the 1x1 conv as one GEMM on the NHWC view of x.

        For an NCHW map that view is a transposed matrix, which the GEMM reads as such: no
        transpose copy, and half the time of the 1x1 convolution there (CPU; NHWC: the same).
        """
        batch, channels, height, width = x.shape
        out = None
        if workspace is not None and Workspace.usable(x):
            out = workspace.take("values", (batch * height * width, channels), x)
        rows = torch.addmm(self.assembly_conv.bias, x.permute(0, 2, 3, 1).reshape(-1, channels),
                           self.assembly_conv.weight.flatten(1).t(), out=out)
        return rows.view(batch, height * width, channels)

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

        # beta folded into W (A_s is linear): one Add per group instead of a Mul and an Add
        values = F.conv2d(x, self.assembly_conv.weight * self.res_scale, self.assembly_conv.bias * self.res_scale)
        out = rows(x) + pattern.apply(rows(values))
        return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
