"""Frame layouts and colour: the one place where the app converts pixels on the host.

Frames travel as uint8 arrays in one of two layouts (:attr:`app.sources.Frame.fmt`):

    ``yuv420p``  the decoder's own planes, stacked as PyAV's ``to_ndarray(format="yuv420p")``
                 gives them: (H*3/2, W) uint8, Y then U then V (:func:`lcoan.color.split_yuv420p`)
    ``rgb24``    packed RGB (H, W, 3) uint8: still images, GStreamer sources, and video whose
                 pixel format is neither yuv420p nor nv12

A yuv420p stream reaches the backend and the encoder with no swscale call at all; nv12 (what
NVDEC gives) is de-interleaved with a numpy slice; every other decoded format is converted by
swscale once, in :func:`planes_of`, which counts it (:data:`CONVERSIONS`) so that the summary
and the tests can say how many frames paid for one.

Colour: :class:`Colour` carries the stream's tags (matrix, range, primaries, transfer). The
planes path never applies a matrix on the host, so colours pass through untouched; the backends
that see RGB (the model) convert with :mod:`lcoan.color` using the stream's matrix and range.
An untagged stream is taken as BT.601 limited, what swscale assumes (NOTES.md).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Colour", "FORMATS", "CONVERSIONS", "planes_of", "to_rgb", "rgb_u8", "yuv_u8", "to_float",
           "from_float", "stack_i420", "colour_check", "frame_size"]

FORMATS = ("yuv420p", "rgb24")

# FFmpeg's AVColorSpace / AVColorRange codes (PyAV exposes the integers)
_SPACE = {1: "bt709", 5: "bt601", 6: "bt601"}
_SPACE_CODE = {"bt709": 1, "bt601": 6}
_RANGE = {1: "limited", 2: "full"}
_RANGE_CODE = {"limited": 1, "full": 2}


@dataclass(frozen=True)
class Colour:
    """A stream's colour tags. ``colorspace`` None: untagged (or a matrix lcoan.color lacks)."""
    colorspace: Optional[str] = None
    range: str = "limited"
    primaries: int = 2        # AVColorPrimaries, 2 = unspecified
    trc: int = 2              # AVColorTransferCharacteristic, 2 = unspecified
    tagged: bool = False

    @classmethod
    def of(cls, obj, fmt: str = "") -> "Colour":
        """From a PyAV frame or codec context (``colorspace``, ``color_range`` ...)."""
        space = int(getattr(obj, "colorspace", 2) or 2)
        rng = int(getattr(obj, "color_range", 0) or 0)
        # yuvj420p is JPEG-range yuv420p whatever the range tag says
        range_ = "full" if fmt.startswith("yuvj") else _RANGE.get(rng, "limited")
        return cls(colorspace=_SPACE.get(space), range=range_,
                   primaries=int(getattr(obj, "color_primaries", 2) or 2), trc=int(getattr(obj, "color_trc", 2) or 2),
                   tagged=space in _SPACE or space not in (0, 2))

    @property
    def matrix(self) -> str:
        """The matrix to convert with: the tag, or BT.601 for an untagged stream (swscale's guess)."""
        return self.colorspace or "bt601"

    def describe(self) -> str:
        if not self.tagged:
            return f"untagged (taken as {self.matrix} {self.range}, as FFmpeg does)"
        return f"{self.colorspace or 'an unsupported matrix'} {self.range}"

    def tag(self, target) -> None:
        """Write these tags on a PyAV encoder context or frame, so the output plays as the input."""
        if not self.tagged:
            return
        for attr, value in (("colorspace", _SPACE_CODE.get(self.colorspace or "")),
                            ("color_range", _RANGE_CODE[self.range]),
                            ("color_primaries", self.primaries), ("color_trc", self.trc)):
            if value:
                try:
                    setattr(target, attr, value)
                except (AttributeError, TypeError, ValueError):  # older PyAV: tags stay unset
                    pass


class _Counter:
    """Frames converted by swscale on their way in (any pixel format but yuv420p/yuvj420p/nv12)."""

    def __init__(self):
        self.count, self.formats, self._lock = 0, set(), threading.Lock()

    def add(self, fmt: str) -> None:
        with self._lock:
            self.count += 1
            self.formats.add(fmt)


CONVERSIONS = _Counter()


def frame_size(image: np.ndarray, fmt: str) -> tuple[int, int]:
    """(width, height) of a frame array in ``fmt``."""
    if fmt == "yuv420p":
        return image.shape[-1], image.shape[-2] * 2 // 3
    return image.shape[-2], image.shape[-3]


def planes_of(frame) -> tuple[np.ndarray, str]:
    """A decoded PyAV VideoFrame as (array, fmt): its yuv420p planes without swscale where the
    decoder gives yuv420p, yuvj420p or nv12 with an even size; converted once otherwise."""
    name = frame.format.name
    even = frame.width % 2 == 0 and frame.height % 2 == 0
    if name in ("yuv420p", "yuvj420p") and even:
        return frame.to_ndarray(format=name), "yuv420p"
    if name == "nv12" and even:
        nv = frame.to_ndarray(format="nv12")                           # (H*3/2, W), UV interleaved
        h, w = frame.height, frame.width
        out = np.empty_like(nv)
        out[:h] = nv[:h]
        uv = nv[h:].reshape(h // 2, w // 2, 2)
        out[h:h + h // 4] = uv[..., 0].reshape(h // 4, w)
        out[h + h // 4:] = uv[..., 1].reshape(h // 4, w)
        return out, "yuv420p"
    CONVERSIONS.add(name)
    if even:
        return frame.to_ndarray(format="yuv420p"), "yuv420p"
    return frame.to_ndarray(format="rgb24"), "rgb24"                   # 4:2:0 cannot hold odd sizes


def to_rgb(image: np.ndarray, fmt: str, colour: Optional[Colour] = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a frame, for side outputs (PNG files, previews, GStreamer RGB caps)."""
    return image if fmt == "rgb24" else rgb_u8(image[None], colour)[0]


def rgb_u8(planes: np.ndarray, colour: Optional[Colour] = None) -> np.ndarray:
    """yuv420p frames (N, H*3/2, W) -> uint8 RGB (N, H, W, 3), with the stream's matrix and range."""
    import torch
    from lcoan.color import float_to_rgb8
    return float_to_rgb8(torch.from_numpy(to_float(planes, "yuv420p", colour))).contiguous().numpy()


def yuv_u8(rgb: np.ndarray, colour: Optional[Colour] = None) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> yuv420p frames (N, H*3/2, W)."""
    return from_float(to_float(rgb, "rgb24"), "yuv420p", colour)[0]


def to_float(batch: np.ndarray, fmt: str, colour: Optional[Colour] = None) -> np.ndarray:
    """uint8 frames (N, ...) in ``fmt`` -> float32 RGB (N, 3, H, W) in [0, 1], on the host: the
    path of backends that only take float (tiles, custom backends, the float graph on Triton)."""
    import torch
    from lcoan.color import i420_to_rgb, rgb8_to_float, split_yuv420p
    x = torch.from_numpy(np.require(batch, requirements="CW"))  # decoded arrays may be read-only
    if fmt == "rgb24":
        out = rgb8_to_float(x)
    else:
        c = colour or Colour()
        out = i420_to_rgb(*split_yuv420p(x), c.matrix, c.range)
    return np.ascontiguousarray(out.numpy())


def from_float(y: np.ndarray, fmt: str, colour: Optional[Colour] = None) -> tuple[np.ndarray, list[int]]:
    """float RGB (N, 3, sH, sW) -> (uint8 frames in ``fmt``, indices of frames with non-finite
    values). A non-finite frame is not a picture (clipping would save NaN as black): it comes back
    zeroed and listed, and the pipeline does not write it."""
    import torch
    from lcoan.color import float_to_rgb8, rgb_to_i420
    t = torch.from_numpy(np.ascontiguousarray(y))
    bad = [int(i) for i in torch.nonzero(~torch.isfinite(t).flatten(1).all(1)).flatten()]
    if bad:
        t = t.clone()
        t[bad] = 0
    if fmt == "rgb24":
        return np.ascontiguousarray(float_to_rgb8(t).numpy()), bad
    c = colour or Colour()
    return stack_i420(*rgb_to_i420(t, c.matrix, c.range)).numpy(), bad


def stack_i420(y, u, v):
    """(N, H, W), (N, H/2, W/2) x 2 torch planes -> (N, H*3/2, W) stacked, the yuv420p layout."""
    import torch
    n, h, w = y.shape
    return torch.cat([y, u.reshape(n, h // 4, w), v.reshape(n, h // 4, w)], dim=1)


def colour_check(stream: Optional[Colour], graph: Optional[tuple[str, str]], what: str) -> Optional[str]:
    """None when frames in ``stream`` colour can go to a graph converting with ``graph``
    (colorspace, range); otherwise the one line that says why not. An untagged stream takes the
    graph's colour (the caller says so)."""
    if stream is None or graph is None or not stream.tagged:
        return None
    if (stream.colorspace, stream.range) != tuple(graph):
        return (f"the stream is {stream.describe()} but {what} converts {graph[0]} {graph[1]}: colours would "
                f"shift; export the graph with --colorspace {stream.colorspace or 'bt709'} --range {stream.range}, "
                "or use an rgb8 or float graph")
    return None
