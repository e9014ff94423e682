"""Seam-free tiled inference.

The LR image is split into a grid of core tiles of ``tile x tile`` LR pixels (the last row and
column of tiles may be smaller). Each core is run through the model together with ``overlap``
pixels of context on every side; of the model output only the part that belongs to the core is
kept (crop, no blending), so the cores tile the output without seams.

The context window is ``min(tile + 2 * overlap, size)`` pixels long along each dimension and is
shifted inwards at the image borders instead of being cut, so all windows have the same shape
(helpful for engines with fixed input shapes) and border cores get more context, never less. At
the image border the window edge coincides with the image edge, so the model's own padding sees
what it sees in whole-image inference.

Exactness: for a purely convolutional model whose receptive-field radius (in LR pixels) is at most
``overlap``, the tiled output equals whole-image inference (up to floating-point summation order).
Models with global operations, such as LCoAN's non-local (clustered) attention, see a different
set of positions in each tile, so their tiled output is only close to whole-image output.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

__all__ = ["tiled_forward", "tile_spans"]


def tile_spans(size: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Per tile along one dimension: ``(core_start, core_end, window_start, window_end)``."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    window = min(tile + 2 * overlap, size)
    spans = []
    for start in range(0, size, tile):
        end = min(start + tile, size)
        w0 = max(0, min(start - overlap, size - window))
        spans.append((start, end, w0, w0 + window))
    return spans


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, scale: int,
                  tile: Optional[int] = 64, overlap: int = 16,
                  out_device: Optional[torch.device] = None) -> torch.Tensor:
    """Run ``fn`` (NCHW -> NC'(H*scale)(W*scale)) on ``lr`` tile by tile and stitch the cores.

    ``tile`` is the core size in LR pixels (``None`` or ``0``: one whole-image call); ``overlap`` is
    the context on each side. Tiles larger than the image and sizes not divisible by ``tile`` are
    handled. The output is assembled on ``out_device`` (default: ``lr``'s device), so only one tile
    is on the compute device at a time when ``out_device`` is the CPU.
    """
    if lr.dim() != 4:
        raise ValueError(f"tiled_forward expects an NCHW tensor, got shape {tuple(lr.shape)}")
    s = int(scale)
    n, _, h, w = lr.shape
    if not tile or (tile >= h and tile >= w):
        out = fn(lr)
        return out if out_device is None else out.to(out_device)
    out: Optional[torch.Tensor] = None
    for ys, ye, wy0, wy1 in tile_spans(h, tile, overlap):
        for xs, xe, wx0, wx1 in tile_spans(w, tile, overlap):
            y = fn(lr[:, :, wy0:wy1, wx0:wx1])
            expect = ((wy1 - wy0) * s, (wx1 - wx0) * s)
            if y.dim() != 4 or y.shape[0] != n or tuple(y.shape[-2:]) != expect:
                raise ValueError(
                    f"tiled_forward: model output {tuple(y.shape)} for input "
                    f"{(n, lr.shape[1], wy1 - wy0, wx1 - wx0)} is not {scale}x the input size")
            if out is None:
                out = torch.empty((n, y.shape[1], h * s, w * s), dtype=y.dtype,
                                  device=out_device if out_device is not None else y.device)
            core = y[:, :, (ys - wy0) * s:(ye - wy0) * s, (xs - wx0) * s:(xe - wx0) * s]
            out[:, :, ys * s:ye * s, xs * s:xe * s] = core.to(out.device)
    assert out is not None
    return out
