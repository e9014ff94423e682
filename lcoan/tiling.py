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

from .errors import LcoanError

__all__ = ["tiled_forward", "tile_spans", "estimate_bytes", "available_bytes", "suggest_tile",
           "check_memory", "MemoryEstimateError"]

# Peak bytes per LR pixel per feature channel of a whole-image LCoAN forward (float32): measured
# 1470 MB above baseline for `edge` (64 features) x2 at 512x512 LR (benchmarks.tiling_memory),
# i.e. about 22 live feature maps; 32 leaves a margin for the attention's gathers and the allocator.
_BYTES_PER_PIXEL_FEATURE = 4 * 32
_BUDGET_FRACTION = 0.8  # of the memory available when the run starts


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


class MemoryEstimateError(LcoanError, MemoryError):
    """An input that would not fit in memory; the message is one line with a --tile suggestion.
    A MemoryError still, for callers that catch that; an LcoanError, so every CLI shows its line."""


def estimate_bytes(h: int, w: int, scale: int, n_feats: int = 64, channels: int = 3) -> int:
    """Peak memory of one whole-image forward at ``h x w`` LR (features plus the output)."""
    return int(h * w * (n_feats * _BYTES_PER_PIXEL_FEATURE + channels * 4 * scale * scale * 2))


def available_bytes(device: Optional[torch.device] = None) -> int:
    """Memory the run may use: free GPU memory, or available RAM bounded by a cgroup limit.

    ``LCOAN_MAX_MEMORY_MB`` overrides it (a container limit that /proc does not show, or a smaller
    budget on a shared machine).
    """
    import os
    override = os.environ.get("LCOAN_MAX_MEMORY_MB")
    if override:
        return int(float(override) * 2**20)
    if device is not None and torch.device(device).type == "cuda":
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    avail = None
    try:
        import psutil
        avail = psutil.virtual_memory().available
    except ImportError:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
            with open(path.replace("memory.max", "memory.current").replace("limit_in_bytes", "usage_in_bytes")) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < (1 << 60):
            avail = min(avail or int(text), int(text) - used)
        break
    return int(avail if avail is not None else 1 << 62)


def suggest_tile(budget: int, scale: int, n_feats: int, overlap: int) -> int:
    """The largest tile (multiple of 16 LR pixels) whose window fits ``budget`` bytes."""
    tile = 16
    while tile < 4096 and estimate_bytes(tile + 16 + 2 * overlap, tile + 16 + 2 * overlap, scale, n_feats) <= budget:
        tile += 16
    return tile


def check_memory(h: int, w: int, scale: int, n_feats: int, tile: Optional[int], overlap: int,
                 device: Optional[torch.device] = None, name: str = "input") -> None:
    """Refuse, before any work, a run whose estimated peak exceeds the memory budget.

    Whole-image runs that would not fit are refused with a ``--tile N`` that would; tiling is not
    switched on silently because LCoAN's non-local attention then sees one tile at a time, which
    changes the result slightly.
    """
    if tile and (tile < h or tile < w):
        wh, ww = min(tile + 2 * overlap, h), min(tile + 2 * overlap, w)
    else:
        wh, ww = h, w
    need = estimate_bytes(wh, ww, scale, n_feats)
    budget = int(available_bytes(device) * _BUDGET_FRACTION)
    if need <= budget:
        return
    gib = 2**30
    if tile and (tile < h or tile < w):
        hint = f"use a smaller --tile (about {suggest_tile(budget, scale, n_feats, overlap)})"
    else:
        hint = f"use --tile {suggest_tile(budget, scale, n_feats, overlap)}"
    raise MemoryEstimateError(f"{name}: {w}x{h} needs about {need / gib:.1f} GiB "
                              f"(budget {budget / gib:.1f} GiB of available memory); {hint}")


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, scale: int,
                  tile: Optional[int] = 64, overlap: int = 16,
                  out_device: Optional[torch.device] = None,
                  on_tile: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Run ``fn`` (NCHW -> NC'(H*scale)(W*scale)) on ``lr`` tile by tile and stitch the cores.

    ``tile`` is the core size in LR pixels (``None`` or ``0``: one whole-image call); ``overlap`` is
    the context on each side. Tiles larger than the image and sizes not divisible by ``tile`` are
    handled. The output is assembled on ``out_device`` (default: ``lr``'s device), so only one tile
    is on the compute device at a time when ``out_device`` is the CPU. ``on_tile(done, total)`` is
    called after each tile (progress display).
    """
    if lr.dim() != 4:
        raise ValueError(f"tiled_forward expects an NCHW tensor, got shape {tuple(lr.shape)}")
    s = int(scale)
    n, _, h, w = lr.shape
    if not tile or (tile >= h and tile >= w):
        out = fn(lr)
        return out if out_device is None else out.to(out_device)
    out: Optional[torch.Tensor] = None
    rows, cols = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    done = 0
    for ys, ye, wy0, wy1 in rows:
        for xs, xe, wx0, wx1 in cols:
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
            done += 1
            if on_tile is not None:
                on_tile(done, len(rows) * len(cols))
    assert out is not None
    return out
