"""The ``tensorrt`` backend: a serialized engine through :class:`engine.runtime.Engine`."""
from __future__ import annotations

import importlib.util
from typing import Optional

import numpy as np

from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME

from .base import Backend, BackendUnavailable, Pending, first_line
from .cuda_pipe import CudaPipe

TRT_NEEDS = "needs an NVIDIA GPU, a CUDA build of torch and pip install 'lcoan-edge[trt]' (tensorrt-rtx-cu13)"


def trt_installed() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))


class TensorRTBackend(Backend):
    """A serialized engine run through :class:`engine.runtime.Engine` (imported lazily).

    The engine's optimisation profile sets ``max_batch`` and ``max_hw`` (the pipeline splits
    batches and tiles frames to fit) and a minimum size (smaller frames are edge-padded and the
    output cropped). Copies go through pinned host buffers on the backend's own CUDA stream. The
    plugin library comes from ``plugins`` or the engine's sidecar.
    """
    name = "tensorrt"

    def __init__(self, path: str, plugins: Optional[str] = None, device: Optional[str] = None):
        try:
            from engine import cache, runtime
        except ImportError as exc:
            raise BackendUnavailable(f"the tensorrt backend {TRT_NEEDS} ({first_line(exc)})") from None
        side = cache.read_sidecar(path) or {}
        plugins = plugins or side.get("plugins")
        index = int(device.split(":", 1)[1]) if device and ":" in device else 0
        try:
            self.engine = runtime.Engine(path, plugins=plugins, device=index)
        except runtime.RuntimeUnavailable as exc:
            msg = first_line(exc)
            raise BackendUnavailable(f"tensorrt backend: {msg}" + ("" if "install" in msg else f"; it {TRT_NEEDS}")) from None
        except Exception as exc:  # bad engine, other TensorRT version or GPU, plugin library missing
            raise BackendUnavailable(f"cannot load TensorRT engine {path}: {first_line(exc)}") from None
        eng = self.engine
        torch = self.torch = eng.torch
        self.dev = eng.device
        lo, _opt, hi = eng.profile
        self.mode = getattr(eng, "mode", "float")
        hw = 2 if self.mode == "float" else 1   # where H sits: NCHW float; NHWC rgb8; (N, H, W) luma
        self.min_hw, self.max_hw, self.max_batch = (lo[hw], lo[hw + 1]), (hi[hw], hi[hw + 1]), hi[0]
        if self.mode == "float":
            eng.context.set_input_shape(INPUT_NAME, tuple(lo))
            self.scale = int(eng.context.get_tensor_shape(OUTPUT_NAME)[2]) // lo[2]
        else:  # integer engines: scale from the sidecar's I/O record
            self.scale = int((eng.io or {}).get("scale") or side.get("scale") or 2)
            self.formats = ("rgb24",) if self.mode == "rgb8" else ("yuv420p",)
            if self.mode == "i420":
                self.graph_colour = (eng.io.get("colorspace", "bt709"), eng.io.get("range", "limited"))
        self.precision = str(side.get("precision", "unknown"))
        self.device = torch.cuda.get_device_name(self.dev)
        self._pipe = CudaPipe(torch, self.dev)
        self.stream = self._pipe.stream
        self._pinned: dict = {}

    def _int_step(self, x):
        """Device uint8 frames through the integer engine (on the pipe's compute stream)."""
        torch = self.torch
        from ..frames import stack_i420
        if self.mode == "rgb8":
            out = self.engine.run({INPUT_NAME: x})[OUTPUT_NAME]
        else:
            from lcoan.color import split_yuv420p
            y, u, v = (p.contiguous() for p in split_yuv420p(x))
            o = self.engine.run({"y": y, "u": u, "v": v})
            out = stack_i420(o["y_sr"], o["u_sr"], o["v_sr"])
        return out, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)

    def submit(self, batch: np.ndarray, fmt: str, colour=None) -> Pending:
        """Integer engines take the frames as uint8 (converted once on the host when the frame
        layout is not the engine's), overlapped like the torch backend; float engines take the
        host float path."""
        if self.mode == "float":
            return super().submit(batch, fmt, colour)
        from ..frames import frame_size
        w, h = frame_size(batch[0], fmt)
        if not (self.min_hw[0] <= h <= self.max_hw[0] and self.min_hw[1] <= w <= self.max_hw[1]):
            if self.mode == "rgb8":  # padded to the profile's minimum by infer (the stream tiles larger frames)
                return Pending(Backend.run_u8(self, batch, fmt, colour, infer=self.infer))
            raise RuntimeError(f"{w}x{h} frames are outside the i420 engine's profile "
                               f"{self.min_hw[1]}x{self.min_hw[0]} .. {self.max_hw[1]}x{self.max_hw[0]}; an i420 "
                               "engine takes whole frames: rebuild it with --min/--max, or use an rgb8 or float engine")
        want = self.formats[0]
        if fmt == want:
            return self._pipe.submit(batch, self._int_step)
        from ..frames import rgb_u8, yuv_u8
        graph = None
        if self.graph_colour:
            from ..frames import Colour
            graph = Colour(*self.graph_colour, tagged=True)
        x = yuv_u8(batch, graph) if want == "yuv420p" else rgb_u8(batch, colour)
        out, bad = self._pipe.submit(x, self._int_step).result()
        return Pending((rgb_u8(out, graph) if want == "yuv420p" else yuv_u8(out, colour), bad))

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        if infer is not None or self.mode == "float":
            return super().run_u8(batch, fmt, colour, infer)
        return self.submit(batch, fmt, colour).result()

    def cancel(self) -> None:
        self._pipe.cancelled = True

    def _pin(self, key: str, shape) -> "torch.Tensor":  # noqa: F821
        buf = self._pinned.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = self._pinned[key] = self.torch.empty(tuple(shape), dtype=self.torch.float32, pin_memory=True)
        return buf

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW in [0, 1] -> float32 NCHW: the stream's tiles of frames larger than the
        profile, and frames smaller than it (edge-padded, the output cropped). An rgb8 engine takes
        each tile as uint8 (its rounding is the whole frame's: tiles are cut, not blended)."""
        torch, s = self.torch, self.scale
        n, c, h, w = batch.shape
        ph, pw = max(0, self.min_hw[0] - h), max(0, self.min_hw[1] - w)
        if ph or pw:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        if self.mode == "rgb8":
            from ..frames import from_float, to_float
            out, _ = self._pipe.submit(from_float(batch, "rgb24")[0], self._int_step).result()
            return np.ascontiguousarray(to_float(out, "rgb24")[:, :, :h * s, :w * s])
        if self.mode == "i420":
            raise RuntimeError("an i420 engine takes whole yuv420p frames within its profile, not float tiles; "
                               "rebuild it with --min/--max, or use an rgb8 or float engine for tiles")
        pin_in = self._pin("in", batch.shape)
        pin_in.numpy()[...] = batch
        pin_out = self._pin("out", (n, c, batch.shape[2] * s, batch.shape[3] * s))
        with torch.cuda.stream(self.stream):
            x = pin_in.to(self.dev, non_blocking=True)
            y = self.engine(x, stream=self.stream)
            pin_out.copy_(y, non_blocking=True)
        self.stream.synchronize()
        return pin_out.numpy()[:, :, :h * s, :w * s].copy()
