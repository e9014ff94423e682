"""The ``bicubic`` backend: plain bicubic upscaling, no model (soak tests, pipeline checks)."""
from __future__ import annotations

import numpy as np

from .base import Backend


class BicubicBackend(Backend):
    """Plain bicubic upscaling, no model. Frames are scaled in their own layout by swscale
    (bicubic, as ``ffmpeg -vf scale``): uint8 planes in, uint8 planes out, no colour conversion.
    ``infer`` (float NCHW, torch) serves tiles and the float interface."""
    name = "bicubic"
    formats = ("yuv420p", "rgb24")

    def __init__(self, scale: int = 2):
        import torch
        self.torch, self.scale = torch, int(scale)
        try:  # imported here, not on the first frame: a live source would drop frames while it loads
            import av
            self.av = av
        except ImportError:
            self.av = None

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        if infer is not None or self.av is None:
            return super().run_u8(batch, fmt, colour, infer)
        av = self.av
        from ..frames import frame_size
        s = self.scale
        out = None
        for i, image in enumerate(batch):
            w, h = frame_size(image, fmt)
            big = av.VideoFrame.from_ndarray(image, format=fmt).reformat(width=w * s, height=h * s,
                                                                         interpolation="BICUBIC")
            arr = big.to_ndarray(format=fmt)
            if out is None:
                out = np.empty((len(batch),) + arr.shape, np.uint8)
            out[i] = arr
        return out, []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F
        with self.torch.inference_mode():
            x = self.torch.from_numpy(batch)
            return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp_(0, 1).numpy()
