"""Side-by-side previews: bicubic | model on the same centre crop, as PNG.

``python -m app clip.mp4 --preview previews/ --preview-every 30`` writes
``previews/preview_000000.png``, ``preview_000030.png``, ...: the left half is the LR crop
upscaled with MATLAB-style bicubic (:func:`lcoan.data.resize.imresize`), the right half the
backend's output for the same region, separated by a white bar. A caption strip above names
each half (``bicubic x2`` / ``model x2``) and the frame index, so a folder of previews reads on
its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["side_by_side", "write_preview"]


def side_by_side(lr: np.ndarray, sr: np.ndarray, scale: int, crop: int = 64) -> np.ndarray:
    """``[bicubic | model]`` for the centre ``crop x crop`` LR pixels (HxWx3 uint8 in and out)."""
    from lcoan.data.resize import imresize
    h, w = lr.shape[:2]
    c = max(1, min(crop, h, w))
    y0, x0 = (h - c) // 2, (w - c) // 2
    patch = np.ascontiguousarray(lr[y0:y0 + c, x0:x0 + c])
    bicubic = np.asarray(imresize(patch, scale=scale))[:c * scale, :c * scale]
    model = sr[y0 * scale:(y0 + c) * scale, x0 * scale:(x0 + c) * scale]
    if model.shape != bicubic.shape:  # output cropped to even size at the border
        hh, ww = min(model.shape[0], bicubic.shape[0]), min(model.shape[1], bicubic.shape[1])
        model, bicubic = model[:hh, :ww], bicubic[:hh, :ww]
    gap = np.full((bicubic.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([bicubic.astype(np.uint8), gap, model], axis=1)


def labelled(pair: np.ndarray, scale: int, index: int, model: str = "model") -> np.ndarray:
    """``pair`` from :func:`side_by_side` with a caption strip: each half named, the frame index."""
    from PIL import Image, ImageDraw
    half = (pair.shape[1] - 4) // 2
    strip = Image.new("RGB", (pair.shape[1], 14), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    draw.text((2, 1), f"bicubic x{scale}", fill=(255, 255, 255))
    draw.text((half + 6, 1), f"{model} x{scale}  #{index}", fill=(255, 255, 255))
    return np.concatenate([np.asarray(strip), pair], axis=0)


def write_preview(folder: str | Path, index: int, lr: np.ndarray, sr: np.ndarray, scale: int,
                  crop: int = 64, model: str = "model") -> Path:
    from PIL import Image
    from lcoan.safeio import atomic_output
    path = Path(folder) / f"preview_{index:06d}.png"
    with atomic_output(path) as tmp:
        Image.fromarray(labelled(side_by_side(lr, sr, scale, crop), scale, index, model)).save(tmp, format="PNG")
    return path
