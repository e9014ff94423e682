"""Inference backends behind one interface.

    backend = load_backend("onnxruntime", "lcoan.onnx")
    sr = backend.infer(lr)    # NCHW float32 in [0, 1] -> NCHW float32 (N, 3, H*s, W*s)
    backend.name, backend.precision, backend.device, backend.scale

``torch``        PyTorch (CUDA when available, else CPU) from ``.safetensors``/``.pt`` weights, the
                 bundled weights by default, or ``random:PRESET`` (an untrained model, for tests
                 and benchmarks). On CUDA: pinned host buffers, copies and compute on the
                 backend's own stream, optional FP16 autocast.
``onnxruntime``  an exported ONNX graph (``export.to_onnx``) on the best installed execution
                 provider (TensorRT, CUDA, CPU); the plugin-form graph (``LCoAClusterSort``
                 node) runs on the CPU through ``export.ort_ops``. Given weights instead of a
                 graph, the graph is exported to a temporary file first.
``tensorrt``     a serialized engine (``python -m export.to_trt``) through
                 ``engine.runtime.Engine`` (imported lazily); the engine's optimisation profile
                 gives ``max_hw``/``max_batch`` and the pipeline tiles/splits frames to fit.
``bicubic``      plain bicubic upscaling (no model): soak tests and pipeline checks.

A backend that is not installed raises :class:`BackendUnavailable` with one line naming what to
install.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME, load_onnx, read_metadata
from lcoan.errors import LcoanError

__all__ = ["Backend", "BackendUnavailable", "TorchBackend", "OrtBackend", "TensorRTBackend",
           "BicubicBackend", "SlowedBackend", "load_backend", "BACKENDS", "guess_backend"]

BACKENDS = ("torch", "onnxruntime", "tensorrt", "bicubic", "triton")
ORT_INSTALL = ("the onnxruntime backend needs ONNX Runtime: pip install onnxruntime "
               "(onnxruntime-gpu for the CUDA/TensorRT providers) onnx")


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
        from .frames import from_float, to_float
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


# --------------------------------------------------------------------------- torch
def _load_torch_model(model: Optional[str], scale: Optional[int]):
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
            model, self.source = _load_torch_model(None if model is None else str(model), None)
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
        self._pipe = _CudaPipe(torch, self.dev) if cuda else None
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
        from .frames import stack_i420
        rgb = rgb8_to_float(x) if fmt == "rgb24" else i420_to_rgb(*split_yuv420p(x), matrix, range_)
        rgb = rgb.contiguous(memory_format=torch.channels_last)
        y = self.model(rgb.half() if self.precision == "fp16" else rgb)
        finite = torch.isfinite(y).flatten(1).all(1)
        y = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)   # such frames are reported, never written
        out = float_to_rgb8(y) if fmt == "rgb24" else stack_i420(*rgb_to_i420(y, matrix, range_))
        return out.contiguous(), finite

    def _run_step(self, x, fmt: str, colour):
        from .frames import Colour
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
                return Pending((out.numpy(), _bad(finite.numpy())))
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


def _bad(finite: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(~np.asarray(finite, dtype=bool))]


class _CudaPipe:
    """Overlapped copies for a CUDA backend: ``SLOTS`` sets of pinned host buffers and three streams.
    :meth:`submit` copies a uint8 batch into a free slot, queues its upload (upload stream), the
    ``step`` (compute stream, after the upload's event) and the download (download stream, after
    the step's event), and returns at once; so batch k+1's upload and batch k-1's download run
    while batch k computes. A slot is reused once :meth:`Pending.result` has read its output."""
    SLOTS = 3

    def __init__(self, torch, dev):
        self.torch, self.dev = torch, dev
        self.stream, self.up, self.down = (torch.cuda.Stream(dev) for _ in range(3))
        self.slots = [_Slot(torch) for _ in range(self.SLOTS)]
        self.next, self.cancelled = 0, False

    def submit(self, batch: np.ndarray, step) -> "Pending":
        """``step``: device uint8 batch -> (device uint8 output, device bool per-frame finite flags)."""
        torch = self.torch
        slot = self.slots[self.next % len(self.slots)]
        self.next += 1
        while not slot.free.wait(0.1):  # the post stage still reads this slot's last output
            if self.cancelled:
                raise RuntimeError("cancelled while waiting for a free pinned buffer")
        slot.free.clear()
        pin_in = slot.buffer("in", batch.shape, torch.uint8)
        pin_in.numpy()[...] = batch   # while the GPU still runs the previous batch
        with torch.cuda.stream(self.up):
            x = pin_in.to(self.dev, non_blocking=True)
            slot.uploaded.record(self.up)
        self.stream.wait_event(slot.uploaded)
        with torch.cuda.stream(self.stream):
            x.record_stream(self.stream)
            slot.start.record(self.stream)
            out, finite = step(x)
            slot.end.record(self.stream)
        self.down.wait_event(slot.end)
        with torch.cuda.stream(self.down):
            out.record_stream(self.down)
            finite.record_stream(self.down)
            pin_out = slot.buffer("out", out.shape, torch.uint8)
            pin_ok = slot.buffer("ok", finite.shape, torch.bool)
            pin_out.copy_(out, non_blocking=True)
            pin_ok.copy_(finite, non_blocking=True)
            slot.downloaded.record(self.down)
        return _CudaPending(slot, pin_out, pin_ok)


class _Slot:
    """One set of pinned host buffers and the CUDA events that say when each copy is done."""

    def __init__(self, torch):
        import threading
        self.torch = torch
        self.uploaded, self.downloaded = torch.cuda.Event(), torch.cuda.Event()
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.free = threading.Event()
        self.free.set()
        self._buffers: dict = {}

    def buffer(self, key: str, shape, dtype):
        buf = self._buffers.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape):
            # page-locked: the DMA engine copies it without a staging copy, and asynchronously
            buf = self._buffers[key] = self.torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
        return buf


class _CudaPending(Pending):
    def __init__(self, slot: _Slot, out, ok):
        self.slot, self.out, self.ok = slot, out, ok

    def result(self):
        slot = self.slot
        try:
            slot.downloaded.synchronize()
            self.device_ms = slot.start.elapsed_time(slot.end)
            return self.out.numpy().copy(), _bad(self.ok.numpy())
        finally:
            slot.free.set()


# --------------------------------------------------------------------------- onnxruntime
class OrtBackend(Backend):
    name = "onnxruntime"
    PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, path: str, device: Optional[str] = None, threads: Optional[int] = None):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(ORT_INSTALL) from None
        proto = load_onnx(path)  # damage (empty, truncated, not ONNX, missing data) is one line
        try:
            meta = read_metadata(proto, str(path))
        except ValueError as exc:
            raise BackendUnavailable(str(exc)) from None
        self.scale = meta.scale or 2
        self.precision = meta.dtype or "fp32"
        self.path = str(path)
        from export import ort_ops
        if ort_ops.has_plugin(proto):
            try:
                self.session = ort_ops.session(proto, threads=threads)
            except ImportError:
                raise BackendUnavailable("the plugin-form ONNX graph needs onnxruntime-extensions for its CPU "
                                         "LCoAClusterSort: pip install onnxruntime-extensions") from None
        else:
            available = ort.get_available_providers()
            if device == "cpu":
                providers = ["CPUExecutionProvider"]
            else:
                providers = [p for p in self.PROVIDERS if p in available] or ["CPUExecutionProvider"]
                if device and device.startswith("cuda") and not any(p != "CPUExecutionProvider" for p in providers):
                    raise BackendUnavailable("no CUDA execution provider in this ONNX Runtime: pip install onnxruntime-gpu")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
        used = self.session.get_providers()[0]
        self.device = {"TensorrtExecutionProvider": "cuda (ORT TensorRT EP)",
                       "CUDAExecutionProvider": "cuda (ORT CUDA EP)"}.get(used, "cpu")
        self.provider = used
        self.input_name = self.session.get_inputs()[0].name
        self.io = _graph_io(proto, self.session)
        if self.io.mode == "i420":
            self.graph_colour = (self.io.colorspace, self.io.range)
        self.formats = {"rgb8": ("rgb24",), "i420": ("yuv420p",)}.get(self.io.mode, ())
        # On a GPU provider, IOBinding: ORT copies the uint8 inputs up and the outputs down itself,
        # without the float staging copies of run().
        self.binding = self.session.io_binding() if used != "CPUExecutionProvider" else None

    def _run(self, feeds: dict) -> list:
        if self.binding is None:
            return self.session.run(list(self.io.outputs), feeds)
        io = self.binding
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        for name, array in feeds.items():
            io.bind_cpu_input(name, array)
        for name in self.io.outputs:
            io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        """The integer graph takes the frames as they are where its mode matches their layout
        (rgb8: rgb24 frames, i420: yuv420p planes): the conversions run in ORT's threads or on its
        device. Other pairs convert once on the host (lcoan.color) to the graph's layout; the
        float graph takes the host float path. An integer graph rounds and clamps inside, so its
        frames are never reported non-finite."""
        mode = self.io.mode
        if infer is not None or mode == "float":
            return super().run_u8(batch, fmt, colour, infer)
        from .frames import Colour, rgb_u8, yuv_u8
        batch = np.ascontiguousarray(batch)
        if mode == "rgb8":
            x = batch if fmt == "rgb24" else rgb_u8(batch, colour)
            out = self._run({self.io.inputs[0]: x})[0]
            return (out if fmt == "rgb24" else yuv_u8(out, colour)), []
        graph = Colour(self.io.colorspace, self.io.range, tagged=True)
        x = batch if fmt == "yuv420p" else yuv_u8(batch, graph)
        from lcoan.color import split_yuv420p
        y, u, v = (np.ascontiguousarray(p) for p in split_yuv420p(x))
        ys, us, vs = self._run(dict(zip(self.io.inputs, (y, u, v))))
        n, h, w = ys.shape
        out = np.concatenate([ys, us.reshape(n, h // 4, w), vs.reshape(n, h // 4, w)], axis=1)
        return (out if fmt == "yuv420p" else rgb_u8(out, graph)), []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.io.mode == "rgb8":  # the float interface (tiles) on an rgb8 graph
            from .frames import from_float, to_float
            u8, _ = from_float(batch, "rgb24")
            return to_float(self.run_u8(u8, "rgb24")[0], "rgb24")
        if self.io.mode == "i420":
            raise BackendUnavailable(f"{self.path}: an i420 graph takes whole frames; --tile needs a float or rgb8 graph")
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _graph_io(proto, session):
    """The graph's I/O mode, names and colour (``lcoan.graph_io.read_io``); a graph without the
    metadata is read from its input's type (uint8 NHWC: rgb8; three uint8 inputs: i420)."""
    from types import SimpleNamespace
    try:
        from lcoan.graph_io import read_io
        io = read_io(proto)
        return SimpleNamespace(mode=io.mode, inputs=tuple(io.inputs), outputs=tuple(io.outputs),
                               colorspace=getattr(io, "colorspace", None), range=getattr(io, "range", None))
    except ImportError:
        pass
    ins, outs = session.get_inputs(), session.get_outputs()
    mode = "float" if "float" in ins[0].type else ("i420" if len(ins) == 3 else "rgb8")
    return SimpleNamespace(mode=mode, inputs=tuple(i.name for i in ins), outputs=tuple(o.name for o in outs),
                           colorspace="bt709", range="limited")


# --------------------------------------------------------------------------- tensorrt
TRT_NEEDS = "needs an NVIDIA GPU, a CUDA build of torch and pip install 'lcoan-edge[trt]' (tensorrt-rtx-cu13)"


def _trt_installed() -> bool:
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
            raise BackendUnavailable(f"the tensorrt backend {TRT_NEEDS} ({_first_line(exc)})") from None
        side = cache.read_sidecar(path) or {}
        plugins = plugins or side.get("plugins")
        index = int(device.split(":", 1)[1]) if device and ":" in device else 0
        try:
            self.engine = runtime.Engine(path, plugins=plugins, device=index)
        except runtime.RuntimeUnavailable as exc:
            msg = _first_line(exc)
            raise BackendUnavailable(f"tensorrt backend: {msg}" + ("" if "install" in msg else f"; it {TRT_NEEDS}")) from None
        except Exception as exc:  # bad engine, other TensorRT version or GPU, plugin library missing
            raise BackendUnavailable(f"cannot load TensorRT engine {path}: {_first_line(exc)}") from None
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
        self._pipe = _CudaPipe(torch, self.dev)
        self.stream = self._pipe.stream
        self._pinned: dict = {}

    def _int_step(self, x):
        """Device uint8 frames through the integer engine (on the pipe's compute stream)."""
        torch = self.torch
        from .frames import stack_i420
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
        from .frames import frame_size
        w, h = frame_size(batch[0], fmt)
        if not (self.min_hw[0] <= h <= self.max_hw[0] and self.min_hw[1] <= w <= self.max_hw[1]):
            raise RuntimeError(f"{w}x{h} frames are outside the {self.mode} engine's profile "
                               f"{self.min_hw[1]}x{self.min_hw[0]} .. {self.max_hw[1]}x{self.max_hw[0]}; rebuild it "
                               "with --min/--max (integer engines are not tiled)")
        want = self.formats[0]
        if fmt == want:
            return self._pipe.submit(batch, self._int_step)
        from .frames import rgb_u8, yuv_u8
        graph = None
        if self.graph_colour:
            from .frames import Colour
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
        torch, s = self.torch, self.scale
        n, c, h, w = batch.shape
        ph, pw = max(0, self.min_hw[0] - h), max(0, self.min_hw[1] - w)
        if ph or pw:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        pin_in = self._pin("in", batch.shape)
        pin_in.numpy()[...] = batch
        pin_out = self._pin("out", (n, c, batch.shape[2] * s, batch.shape[3] * s))
        with torch.cuda.stream(self.stream):
            x = pin_in.to(self.dev, non_blocking=True)
            y = self.engine(x, stream=self.stream)
            pin_out.copy_(y, non_blocking=True)
        self.stream.synchronize()
        return pin_out.numpy()[:, :, :h * s, :w * s].copy()


# --------------------------------------------------------------------------- bicubic
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
        from .frames import frame_size
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


# --------------------------------------------------------------------------- factory
def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def guess_backend(model: Optional[str]) -> str:
    if not model or model.startswith("random:"):
        return "torch"
    suffix = Path(model).suffix.lower()
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    if suffix == ".onnx":
        return "onnxruntime"
    return "torch"


def _export_temp_onnx(model_spec: Optional[str], scale: Optional[int]) -> str:
    from export.to_onnx import export_onnx
    model, _ = _load_torch_model(model_spec, scale)
    folder = tempfile.mkdtemp(prefix="lcoan_app_")
    return str(export_onnx(model, Path(folder) / "model.onnx", sort="onnx"))


def load_backend(kind: Optional[str] = None, model: Optional[str] = None, scale: Optional[int] = None,
                 precision: str = "fp32", device: Optional[str] = None, threads: Optional[int] = None,
                 plugins: Optional[str] = None, url: Optional[str] = None, tile: Optional[int] = None,
                 overlap: int = 16, compile: bool = False) -> Backend:  # noqa: A002 - the CLI flag

    """The backend ``kind`` (default: from ``model``'s file type) for ``model``, which may also be a
    name from the weights table (``edge_x2``)."""
    if model and not os.path.exists(model):
        from lcoan.pretrained import PRETRAINED, get_pretrained
        if model in PRETRAINED:
            try:
                model = str(get_pretrained(model).path)
            except ValueError as exc:  # declared, not bundled
                raise BackendUnavailable(str(exc)) from None
    kind = kind or guess_backend(model)
    if kind not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    if compile and kind != "torch":
        raise BackendUnavailable(f"--compile is for the torch backend (the {kind} backend runs a built graph)")
    if kind == "triton":  # the model lives on the server at ``url`` (app/triton_backend.py)
        from .triton_backend import TritonBackend
        return TritonBackend(url, tile=tile, overlap=overlap)
    if model and not model.startswith("random:") and not os.path.exists(model):
        raise BackendUnavailable(f"model file not found: {model}")
    if kind == "bicubic":
        return BicubicBackend(scale or 2)
    if kind == "torch":
        if model and Path(model).suffix.lower() in (".onnx", ".engine", ".plan", ".trt"):
            raise BackendUnavailable(f"the torch backend needs weights (.safetensors/.pt), not {model}")
        net, _ = _load_torch_model(model, scale)
        return TorchBackend(net, device=device, precision=precision, threads=threads, compile=compile)
    if kind == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            raise BackendUnavailable(ORT_INSTALL)
        path = model if model and Path(model).suffix.lower() == ".onnx" else _export_temp_onnx(model, scale)
        return OrtBackend(path, device=device, threads=threads)
    if model is None or Path(model).suffix.lower() not in (".engine", ".plan", ".trt"):
        if not _trt_installed():
            raise BackendUnavailable(f"the tensorrt backend {TRT_NEEDS}")
        raise BackendUnavailable("the tensorrt backend needs a serialized engine (--model F.engine; "
                                 "build one with python -m export.to_trt)")
    backend = TensorRTBackend(model, plugins=plugins, device=device)
    if scale and backend.scale != scale:
        raise BackendUnavailable(f"--scale {scale} but the engine upscales x{backend.scale}")
    return backend


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
