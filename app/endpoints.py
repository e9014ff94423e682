"""What the sources, the sinks and the GStreamer ends share: the items a stream carries
(:class:`Frame`, :class:`Passthrough`), the :class:`Source` and :class:`Sink` interfaces and their
errors, the input and output suffixes, and the PyAV import. :mod:`app.sources`, :mod:`app.sinks`
and :mod:`app.gst` all build on this module and none of them on another's internals, so the
file and GStreamer ends can choose each other without a circle.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator, Optional

import numpy as np
from lcoan.errors import LcoanError

__all__ = ["Frame", "Passthrough", "Source", "SourceError", "Sink", "SinkError", "IMAGE_SUFFIXES",
           "VIDEO_SUFFIXES", "LIVE_PREFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts")
# Inputs that app.gst opens (live or streamed, never still images).
LIVE_PREFIXES = ("gst:", "csi:", "rtsp://", "rtsps://", "camera:")


class SourceError(LcoanError, RuntimeError):
    """An input that cannot be opened at all (one line)."""


@dataclass
class Frame:
    """One decoded frame on its way through the pipeline."""
    index: int                     # position in the source (0-based, counting good frames)
    image: np.ndarray              # uint8 in ``fmt`` (LR in, SR after inference): app.frames
    pts: Optional[int] = None
    time_base: Optional[Fraction] = None
    name: Optional[str] = None     # source file name for image inputs
    path: Optional[str] = None     # source file path for image inputs (names output files)
    t_source: float = 0.0          # perf_counter() when the frame left the decoder
    lr: Optional[np.ndarray] = None  # the LR image kept for previews
    stamps: dict = field(default_factory=dict)
    fmt: str = "rgb24"             # "yuv420p": stacked planes (H*3/2, W); "rgb24": (H, W, 3)
    colour: Optional[object] = None  # app.frames.Colour of a video stream (None: RGB or untagged)


@dataclass
class Passthrough:
    """A non-video item (an audio packet) carried along the pipeline to the sink."""
    packet: object


def require_av():
    try:
        import av  # noqa: F401
    except ImportError:
        raise SourceError("video input/output needs PyAV: pip install 'lcoan-edge[app]' (av)") from None
    import av
    return av


class Source:
    fps: Optional[Fraction] = None     # nominal frame rate (None: unknown, e.g. images)
    time_base: Optional[Fraction] = None
    total: Optional[int] = None        # frame count if known
    audio = None                       # input audio stream (for remuxing) or None
    live = False                       # frames arrive in real time (camera)
    kind = "source"

    def __init__(self):
        self.corrupt = 0
        self.problems: list[str] = []  # one line each, naming the file: reported even with --quiet
        self.truncated: Optional[str] = None  # why the input looks cut short, or None
        self.inputs: list[str] = []  # files and folders read, which no output may overwrite
        self._stop = threading.Event()

    def problem(self, text: str) -> None:
        if len(self.problems) < 1000:  # a badly damaged stream must not grow memory without bound
            self.problems.append(" ".join(str(text).split()))

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame | Passthrough]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class SinkError(LcoanError, RuntimeError):
    """An output that cannot be written (one line)."""


class Sink:
    kind = "sink"

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def write_passthrough(self, item: Passthrough) -> None:
        pass

    def close(self) -> None:
        pass
