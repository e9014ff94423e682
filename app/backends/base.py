"""What every backend shares: the :class:`Backend` interface, :class:`Pending` results, the
:class:`BackendUnavailable` error, and :class:`SlowedBackend` (a slower device, for tests)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from lcoan.errors import LcoanError


class BackendUnavailable(LcoanError, RuntimeError):
    """A backend (or the model it needs) is not available here; the message is one line."""


class Backend:
    name = "backend"
    precision = "fp32"
    device = "cpu"
    scale = 2
    max_batch: Optional[int] = None
    max_hw: Optional[tuple[int, int]] = None   # largest LR (H, W) one call accepts

    # uint8 layouts (app.frames) that run_u8 takes without a host float round trip, and the
    # (colorspace, range) an integer I420 graph converts with (None: the stream's own is used)
    formats: tuple = ()
    graph_colour: Optional[tuple[str, str]] = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW RGB in [0, 1] -> float32 NCHW (N, 3, H*s, W*s)."""
        raise NotImplementedError

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None) -> tuple[np.ndarray, list[int]]:
        """uint8 frames (N, ...) in ``fmt`` -> (uint8 frames at s x the size in ``fmt``, indices
        of frames whose output was not finite). This default converts on the host around
        ``infer`` (or the given float runner: the pipeline's tiling); backends override it with
        their own integer path."""
        from ..frames import from_float, to_float
        return from_float((infer or self.infer)(to_float(batch, fmt, colour)), fmt, colour)

    def submit(self, batch: np.ndarray, fmt: str, colour=None) -> "Pending":
        """Start ``run_u8`` and return at once where the backend overlaps its copies with compute
        (CUDA); the result is :meth:`Pending.result`. This default runs it to the end here."""
        return Pending(self.run_u8(batch, fmt, colour))

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": self.device, "scale": self.scale}


class Pending:
    """A submitted batch: ``result()`` -> (uint8 frames, non-finite indices); ``device_ms`` is the
    device time of the inference where the backend measures it (CUDA events), else None."""
    device_ms: Optional[float] = None

    def __init__(self, value=None):
        self._value = value

    def result(self):
        return self._value


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class SlowedBackend(Backend):
    """Wraps a backend and sleeps ``delay_s`` per call: simulates a slower device (real-time tests)."""

    def __init__(self, inner: Backend, delay_s: float):
        self.inner, self.delay_s = inner, float(delay_s)
        self.name, self.precision, self.device = inner.name, inner.precision, inner.device
        self.scale, self.max_batch, self.max_hw = inner.scale, inner.max_batch, inner.max_hw
        self.formats, self.graph_colour = inner.formats, inner.graph_colour

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import time
        time.sleep(self.delay_s)
        return self.inner.infer(batch)

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        if infer is not None:
            return super().run_u8(batch, fmt, colour, infer)
        import time
        time.sleep(self.delay_s)
        return self.inner.run_u8(batch, fmt, colour)
