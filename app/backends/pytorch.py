"""The ``torch`` backend: the PyTorch model from weights (or ``random:PRESET``)."""
from __future__ import annotations

import copy
import os
from typing import Optional

import numpy as np

from .base import Backend, BackendUnavailable, Pending
from .cuda_pipe import CudaPipe, bad_frames


def load_torch_model(model: Optional[str], scale: Optional[int]):
    import lcoan
    from lcoan import CheckpointError
    if model and model.startswith("random:"):
        import torch
        preset = model.split(":", 1)[1] or "edge"
        torch.manual_seed(0)
        return lcoan.build_model(preset, scale=scale or 2).eval(), f"random {preset} weights (untrained)"
    if not model:
        scale = scale or 2
        try:
            model = str(lcoan.default_weights(scale))
        except CheckpointError as exc:
            raise BackendUnavailable(
                f"{exc.problem.split(';')[0]}; pass --model W.safetensors, F.onnx or F.engine "
                "(or --model random:edge for an untrained model)") from None
    try:
        return (lcoan.load_model(model, scale=scale) if scale else lcoan.load_model(model)), model
    except (CheckpointError, FileNotFoundError, OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot load weights: {exc}") from None


class TorchBackend(Backend):
    """The PyTorch model. Frames come in and go out as uint8 (``run_u8``/``submit``): the layout
    and colour conversions (:mod:`lcoan.color`) run on the model's device, so only uint8 crosses
    the bus (1.5 bytes per pixel for I420, 12 for float RGB).

    On CUDA, batches go through ``SLOTS`` pinned host buffers on three streams: the upload of batch
    k+1 and the download of batch k-1 overlap the inference of batch k (``submit`` returns as soon
    as the work is queued; :meth:`Pending.result` waits for the download). ``compile=True``:
    ``torch.compile`` of the whole device step (conversions fused with the network); on CUDA with
    ``mode="reduce-overhead"``, i.e. CUDA graphs for each fixed frame size.
    """
    name = "torch"
    formats = ("yuv420p", "rgb24")

    def __init__(self, model, device: Optional[str] = None, precision: str = "fp32", threads: Optional[int] = None,
                 compile: bool = False):  # noqa: A002 - the CLI flag's name
        import torch
        if isinstance(model, (str, os.PathLike)) or model is None:
            model, self.source = load_torch_model(None if model is None else str(model), None)
        else:
            self.source = "module"
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("device cuda requested but this PyTorch has no CUDA device: install a "
                                     "CUDA build of torch (https://pytorch.org) or use --device cpu")
        if precision not in ("fp32", "fp16"):
            raise BackendUnavailable(f"torch precision must be fp32 or fp16, got {precision}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendUnavailable("fp16 with the torch backend needs a CUDA device; use --precision fp32 on CPU")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.dev = torch.device(device)
        # NHWC weights: oneDNN (CPU) and cuDNN's FP16 kernels compute in NHWC, so NCHW pays a layout
        # conversion around every conv, and LSP's [B, H*W, C] rows become views instead of copies
        # (edge at 180x320 on CPU: 0.85x the time; H100 FP16: 1.1-1.5x the fps, docs/benchmarks.md).
        # Outputs differ from NCHW by float rounding only (~2e-6).
        if self.source == "module":  # the caller's module keeps its dtype and layout
            model = copy.deepcopy(model)
        self.model = model.eval().to(self.dev, memory_format=torch.channels_last)
        if precision == "fp16":
            self.model = self.model.half()  # FP16 end to end: 67-74 dB from FP32 (benchmarks.gpu_fps)
        self.scale = int(model.config.scale)
        self.precision = precision
        self.device = torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else "cpu"
        cuda = self.dev.type == "cuda"
        self._pipe = CudaPipe(torch, self.dev) if cuda else None
        self.stream = self._pipe.stream if cuda else None
        self._pinned_in = self._pinned_out = None
        self.compiled = bool(compile)
        self._step = self._device_step
        if compile:
            self._step = torch.compile(self._device_step, mode="reduce-overhead" if cuda else None, dynamic=False)

    def _device_step(self, x, fmt: str, matrix: str, range_: str):
        """uint8 frames on the device -> (uint8 SR frames, per-frame finite flags), all on the device."""
        torch = self.torch
        from lcoan.color import float_to_rgb8, i420_to_rgb, rgb8_to_float, rgb_to_i420, split_yuv420p
        from ..frames import stack_i420
        rgb = rgb8_to_float(x) if fmt == "rgb24" else i420_to_rgb(*split_yuv420p(x), matrix, range_)
        rgb = rgb.contiguous(memory_format=torch.channels_last)
        y = self.model(rgb.half() if self.precision == "fp16" else rgb)
        finite = torch.isfinite(y).flatten(1).all(1)
        y = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)   # such frames are reported, never written
        out = float_to_rgb8(y) if fmt == "rgb24" else stack_i420(*rgb_to_i420(y, matrix, range_))
        return out.contiguous(), finite

    def _run_step(self, x, fmt: str, colour):
        from ..frames import Colour
        c = colour or Colour()
        if self.compiled and self.stream is not None:
            self.torch.compiler.cudagraph_mark_step_begin()
            out, finite = self._step(x, fmt, c.matrix, c.range)
            return out.clone(), finite.clone()  # a CUDA graph's outputs are overwritten by its next replay
        return self._step(x, fmt, c.matrix, c.range)

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        if infer is not None:
            return super().run_u8(batch, fmt, colour, infer)
        return self.submit(batch, fmt, colour).result()

    def submit(self, batch: np.ndarray, fmt: str, colour=None) -> "Pending":
        torch = self.torch
        with torch.inference_mode():
            if self.stream is None:
                out, finite = self._run_step(torch.from_numpy(np.require(batch, requirements="CW")), fmt, colour)
                return Pending((out.numpy(), bad_frames(finite.numpy())))
            return self._pipe.submit(batch, lambda x: self._run_step(x, fmt, colour))

    def cancel(self) -> None:
        if self._pipe is not None:
            self._pipe.cancelled = True

    def _staging(self, attr: str, shape) -> "torch.Tensor":  # noqa: F821
        buf = getattr(self, attr)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = self.torch.empty(shape, dtype=self.torch.float32, pin_memory=True)
            setattr(self, attr, buf)
        return buf

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The float interface (tiles, parity checks): float32 NCHW in and out."""
        torch = self.torch
        with torch.inference_mode():
            if self.stream is None:
                return self.model(torch.from_numpy(batch)).contiguous().numpy()
            n, c, h, w = batch.shape
            pin_in = self._staging("_pinned_in", batch.shape)
            pin_in.numpy()[...] = batch
            pin_out = self._staging("_pinned_out", (n, c, h * self.scale, w * self.scale))
            with torch.cuda.stream(self.stream):
                x = pin_in.to(self.dev, non_blocking=True)
                y = self.model(x.half() if self.precision == "fp16" else x)
                pin_out.copy_(y, non_blocking=True)  # copy_ converts dtype and layout
            self.stream.synchronize()
            return pin_out.numpy().copy()
