"""Run a serialized LCoAN engine on CUDA tensors (used by parity and the app).

    from engine.runtime import Engine
    engine = Engine("lcoan.engine", plugins="liblcoan_plugins.so")
    sr = engine(lr)              # lr: torch CUDA float32 [N, 3, h, w] -> sr on the same device
    out = engine.run({"y": y, "u": u, "v": v})   # any I/O mode: input name -> CUDA tensor, outputs by name

``engine.mode`` is the graph's I/O mode (``float``, ``rgb8``, ``i420``: lcoan.graph_io), read from
the engine's own tensors (names and dtypes), and ``engine.io`` the sidecar's record of it
(colour space and range of an i420 engine).

Dynamic shapes go through ``set_input_shape``, buffers through ``set_tensor_address`` and the
launch through ``execute_async_v3`` on the current torch CUDA stream (TensorRT 10.x / 11.x and
TensorRT-RTX share this API). The engine's sidecar is checked before deserialising
(``engine.cache.check_loadable``), and before the GPU check, so a wrong or truncated engine is
reported as such on any machine. Without a TensorRT runtime or a CUDA GPU the constructor then
raises a one-line :class:`RuntimeUnavailable`; any other problem with an engine is an
:class:`engine.errors.EngineError`, the sidecar checks' included.

Comparing an engine with ONNX Runtime (the parity report and Polygraphy) is ``verify.parity``'s
(``compare_engine``, with ``verify.engine_vs_ort`` for Polygraphy).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME

from . import cache
from .errors import EngineError
from .trt import device_info, import_trt, trt_info


class RuntimeUnavailable(EngineError):
    """No TensorRT runtime or no CUDA GPU to run engines on."""


def _torch_cuda():
    try:
        import torch
    except ImportError:
        raise RuntimeUnavailable("running engines needs PyTorch with CUDA (torch CUDA tensors)") from None
    if not torch.cuda.is_available():
        raise RuntimeUnavailable("no CUDA GPU: TensorRT engines run only on a GPU (this machine can build "
                                 "them with TensorRT-RTX but not run them)")
    return torch


def require_runtime():
    """``(trt, torch)`` when engines can run here; otherwise a one-line RuntimeUnavailable."""
    try:
        trt = import_trt()
    except EngineError as exc:
        raise RuntimeUnavailable(str(exc)) from None
    return trt, _torch_cuda()


class Engine:
    """A deserialized engine plus one execution context."""

    def __init__(self, path: str | os.PathLike, plugins: str | os.PathLike | None = None,
                 device: int = 0, check_sidecar: bool = True):
        self.path = Path(path)
        # Sidecar, sha256 and TensorRT version first: a wrong or truncated engine is diagnosed on
        # any machine, before "no GPU" could hide it.
        side = cache.check_engine_file(self.path) if check_sidecar else {}
        try:
            trt = import_trt()
        except EngineError as exc:
            raise RuntimeUnavailable(str(exc)) from None
        if check_sidecar:
            cache.check_built_for(self.path, side, trt_info(trt).label)
        torch = _torch_cuda()
        self.trt, self.torch = trt, torch
        self.device = torch.device("cuda", device)
        if check_sidecar:
            cache.check_built_for(self.path, side, device=device_info(device).label)
        self.sidecar = side
        if plugins:
            from .build import load_plugins
            load_plugins(trt, plugins)
        from .build import make_logger
        self._logger = make_logger(trt)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self._logger)
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                errors = self._logger.errors()
                raise EngineError(f"{self.path}: TensorRT could not deserialize the engine"
                                  + (f": {' '.join(errors[-1].split())[:200]}" if errors else ""))
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = tuple(n for n in names if n not in self.inputs)
        from lcoan.graph_io import IO_NAMES
        mode = next((m for m, (i, o) in IO_NAMES.items() if self.inputs == i and self.outputs == o), None)
        if mode is None:
            raise EngineError(f"{self.path}: expected tensors {INPUT_NAME!r} -> {OUTPUT_NAME!r} or y, u, v -> "
                              f"y_sr, u_sr, v_sr, got {list(self.inputs)} -> {list(self.outputs)}")
        if mode != "i420" and self._dtype(INPUT_NAME) == torch.uint8:
            mode = "rgb8"
        self.mode = mode
        self.io = dict(side.get("io") or {"mode": mode})
        # the first input's (min, opt, max); i420: (N, H, W) of the luma plane
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape(self.inputs[0], 0)]

    def _dtype(self, name: str):
        """The torch dtype of an I/O tensor."""
        dt, trt, torch = self.engine.get_tensor_dtype(name), self.trt, self.torch
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                 trt.DataType.UINT8: torch.uint8, trt.DataType.INT8: torch.int8, trt.DataType.INT32: torch.int32}
        if dt not in table:
            raise EngineError(f"{self.path}: tensor {name!r} has type {dt}, which this runtime does not feed")
        return table[dt]

    def run(self, feeds: dict, stream=None) -> dict:
        """Any I/O mode: ``feeds`` maps every input name to a CUDA tensor of the engine's dtype; returns
        the outputs by name (new tensors on the same device), queued on ``stream``."""
        torch, ctx = self.torch, self.context
        keep = {}
        for name in self.inputs:
            t = feeds[name].to(device=self.device, dtype=self._dtype(name)).contiguous()
            keep[name] = t
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            outs[name] = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtype(name), device=self.device)
            ctx.set_tensor_address(name, outs[name].data_ptr())
        stream = stream or torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            shapes = {k: tuple(v.shape) for k, v in keep.items()}
            raise EngineError(f"{self.path}: execute_async_v3 failed for inputs {shapes}")
        return outs

    def check_shape(self, shape: Sequence[int]) -> None:
        lo, _opt, hi = self.profile
        if len(shape) != 4 or any(not lo[i] <= shape[i] <= hi[i] for i in range(4)):
            raise EngineError(f"input shape {tuple(shape)} is outside the engine's profile "
                              f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}; rebuild with "
                              "--min/--max, or tile the image")

    def __call__(self, lr, stream=None):
        """``lr``: torch CUDA float32 ``[N, 3, h, w]``; returns ``sr`` (float32, same device)."""
        torch = self.torch
        if self.mode != "float":
            raise EngineError(f"{self.path}: a {self.mode} engine takes uint8 frames; use run()")
        if not isinstance(lr, torch.Tensor) or not lr.is_cuda:
            raise EngineError("Engine expects a torch CUDA tensor; use run_numpy for arrays")
        lr = lr.to(device=self.device, dtype=torch.float32).contiguous()
        self.check_shape(lr.shape)
        ctx = self.context
        ctx.set_input_shape(INPUT_NAME, tuple(lr.shape))
        out_shape = tuple(ctx.get_tensor_shape(OUTPUT_NAME))
        sr = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        ctx.set_tensor_address(INPUT_NAME, lr.data_ptr())
        ctx.set_tensor_address(OUTPUT_NAME, sr.data_ptr())
        stream = stream or torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"{self.path}: execute_async_v3 failed for input {tuple(lr.shape)}")
        return sr

    def run_numpy(self, lr: np.ndarray) -> np.ndarray:
        torch = self.torch
        sr = self(torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).to(self.device))
        torch.cuda.current_stream(self.device).synchronize()
        return sr.cpu().numpy()


def engine_runner(path: str | os.PathLike, plugins: str | os.PathLike | None = None):
    """A ``verify.parity`` runner (numpy in, numpy out) for an engine."""
    engine = Engine(path, plugins)
    return engine.run_numpy
