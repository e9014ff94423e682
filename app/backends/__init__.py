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

One module per backend (``pytorch``, ``ort``, ``tensorrt``, ``bicubic``, ``triton``: the Triton
client), the interface they share in ``base`` and the CUDA copy pipeline of the torch and tensorrt
backends in ``cuda_pipe``; this module picks one (:func:`load_backend`).
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Optional

from .base import Backend, BackendUnavailable, Pending, SlowedBackend
from .bicubic import BicubicBackend
from .ort import ORT_INSTALL, OrtBackend
from .pytorch import TorchBackend, load_torch_model
from .tensorrt import TRT_NEEDS, TensorRTBackend, trt_installed
from .triton import TritonBackend

__all__ = ["Backend", "BackendUnavailable", "TorchBackend", "OrtBackend", "TensorRTBackend",
           "BicubicBackend", "SlowedBackend", "TritonBackend", "load_backend", "BACKENDS", "guess_backend",
           "Pending", "ORT_INSTALL", "TRT_NEEDS", "load_torch_model", "trt_installed"]

BACKENDS = ("torch", "onnxruntime", "tensorrt", "bicubic", "triton")


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
    model, _ = load_torch_model(model_spec, scale)
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
    if kind == "triton":  # the model lives on the server at ``url`` (app/backends/triton.py)
        return TritonBackend(url, tile=tile, overlap=overlap)
    if model and not model.startswith("random:") and not os.path.exists(model):
        raise BackendUnavailable(f"model file not found: {model}")
    if kind == "bicubic":
        return BicubicBackend(scale or 2)
    if kind == "torch":
        if model and Path(model).suffix.lower() in (".onnx", ".engine", ".plan", ".trt"):
            raise BackendUnavailable(f"the torch backend needs weights (.safetensors/.pt), not {model}")
        net, _ = load_torch_model(model, scale)
        return TorchBackend(net, device=device, precision=precision, threads=threads, compile=compile)
    if kind == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            raise BackendUnavailable(ORT_INSTALL)
        path = model if model and Path(model).suffix.lower() == ".onnx" else _export_temp_onnx(model, scale)
        return OrtBackend(path, device=device, threads=threads)
    if model is None or Path(model).suffix.lower() not in (".engine", ".plan", ".trt"):
        if not trt_installed():
            raise BackendUnavailable(f"the tensorrt backend {TRT_NEEDS}")
        raise BackendUnavailable("the tensorrt backend needs a serialized engine (--model F.engine; "
                                 "build one with python -m export.to_trt)")
    backend = TensorRTBackend(model, plugins=plugins, device=device)
    if scale and backend.scale != scale:
        raise BackendUnavailable(f"--scale {scale} but the engine upscales x{backend.scale}")
    return backend
