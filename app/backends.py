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

from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME, read_metadata
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": self.device, "scale": self.scale}


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
    name = "torch"

    def __init__(self, model, device: Optional[str] = None, precision: str = "fp32", threads: Optional[int] = None):
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
        self.stream = torch.cuda.Stream(self.dev) if self.dev.type == "cuda" else None
        self._pinned_in = self._pinned_out = None

    def _staging(self, attr: str, shape) -> "torch.Tensor":  # noqa: F821
        buf = getattr(self, attr)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = self.torch.empty(shape, dtype=self.torch.float32, pin_memory=True)
            setattr(self, attr, buf)
        return buf

    def infer(self, batch: np.ndarray) -> np.ndarray:
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
        proto = onnx.load(str(path))
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


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
        self.min_hw, self.max_hw, self.max_batch = (lo[2], lo[3]), (hi[2], hi[3]), hi[0]
        eng.context.set_input_shape(INPUT_NAME, tuple(lo))
        self.scale = int(eng.context.get_tensor_shape(OUTPUT_NAME)[2]) // lo[2]
        self.precision = str(side.get("precision", "unknown"))
        self.device = torch.cuda.get_device_name(self.dev)
        self.stream = torch.cuda.Stream(self.dev)
        self._pinned: dict = {}

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
    name = "bicubic"

    def __init__(self, scale: int = 2):
        import torch
        self.torch, self.scale = torch, int(scale)

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
                 overlap: int = 16) -> Backend:
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
        return TorchBackend(net, device=device, precision=precision, threads=threads)
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import time
        time.sleep(self.delay_s)
        return self.inner.infer(batch)
