"""Run a serialized LCoAN engine on CUDA tensors (used by parity and the app).

    from engine.runtime import Engine
    engine = Engine("lcoan.engine", plugins="liblcoan_plugins.so")
    sr = engine(lr)              # lr: torch CUDA float32 [N, 3, h, w] -> sr on the same device

Dynamic shapes go through ``set_input_shape``, buffers through ``set_tensor_address`` and the
launch through ``execute_async_v3`` on the current torch CUDA stream (TensorRT 10.x / 11.x and
TensorRT-RTX share this API). The engine's sidecar is checked before deserialising
(``engine.cache.check_loadable``), and before the GPU check, so a wrong or truncated engine is
reported as such on any machine. Without a TensorRT runtime or a CUDA GPU the constructor then
raises a one-line :class:`RuntimeUnavailable`.

``compare_engine`` runs an engine against ONNX Runtime on the same inputs with Polygraphy's
``Comparator`` (``TrtRunner`` vs ``OnnxrtRunner``); the command-line equivalent is

    polygraphy run lcoan.onnx --trt --onnxrt --plugins liblcoan_plugins.so \\
        --trt-min-shapes lr:[1,3,16,16] --trt-opt-shapes lr:[1,3,270,480] \\
        --trt-max-shapes lr:[1,3,540,960] --input-shapes lr:[1,3,64,64] --atol 1e-2 --rtol 1e-2

(with ``POLYGRAPHY_USE_TENSORRT_RTX=1`` for TensorRT-RTX).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME, read_metadata

from . import cache
from export.errors import ExportError
from .trt import device_info, import_trt, trt_info


class RuntimeUnavailable(ExportError):
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
    except ExportError as exc:
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
        except ExportError as exc:
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
                raise ExportError(f"{self.path}: TensorRT could not deserialize the engine"
                                  + (f": {' '.join(errors[-1].split())[:200]}" if errors else ""))
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or OUTPUT_NAME not in names:
            raise ExportError(f"{self.path}: expected tensors {INPUT_NAME!r} and {OUTPUT_NAME!r}, got {names}")
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape(INPUT_NAME, 0)]

    def check_shape(self, shape: Sequence[int]) -> None:
        lo, _opt, hi = self.profile
        if len(shape) != 4 or any(not lo[i] <= shape[i] <= hi[i] for i in range(4)):
            raise ExportError(f"input shape {tuple(shape)} is outside the engine's profile "
                              f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}; rebuild with "
                              "--min/--max, or tile the image")

    def __call__(self, lr, stream=None):
        """``lr``: torch CUDA float32 ``[N, 3, h, w]``; returns ``sr`` (float32, same device)."""
        torch = self.torch
        if not isinstance(lr, torch.Tensor) or not lr.is_cuda:
            raise ExportError("Engine expects a torch CUDA tensor; use run_numpy for arrays")
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
            raise ExportError(f"{self.path}: execute_async_v3 failed for input {tuple(lr.shape)}")
        return sr

    def run_numpy(self, lr: np.ndarray) -> np.ndarray:
        torch = self.torch
        sr = self(torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).to(self.device))
        torch.cuda.current_stream(self.device).synchronize()
        return sr.cpu().numpy()


def engine_runner(path: str | os.PathLike, plugins: str | os.PathLike | None = None):
    """An ``export.parity`` runner (numpy in, numpy out) for an engine."""
    engine = Engine(path, plugins)
    return engine.run_numpy


# --------------------------------------------------------------------------- comparisons
def compare_engine(engine: str | os.PathLike, onnx_path: str | os.PathLike, images=None, *,
                   plugins: str | os.PathLike | None = None, scale: int | None = None,
                   limit: int | None = None, precision: str | None = None):
    """Engine vs ONNX Runtime on the same images: ``(parity.Report, polygraphy_ok)``.

    ``images``: a folder for ``export.parity.load_samples`` or a list of ``Sample``; default
    Set5 + Set14. The report is ``export.parity``'s (drift, Y-PSNR per image); Polygraphy's
    ``Comparator`` checks the same outputs with its own tolerances.
    """
    import onnx

    from export import parity
    from export.precision import graph_precision
    require_runtime()
    proto = onnx.load(str(onnx_path))
    scale = scale or read_metadata(proto, str(onnx_path)).scale or 2
    side = cache.read_sidecar(engine) or {}
    precision = precision or side.get("precision") or graph_precision(proto)
    if images is None:
        samples = parity.benchmark_samples(scale, limit=limit)
    elif isinstance(images, (str, os.PathLike)):
        problems: list[str] = []
        samples = parity.load_samples(images, scale, limit, problems=problems)
        for line in problems:  # named and skipped, as in export.parity
            print(f"skipped: {line}", file=sys.stderr)
        if not samples:
            raise ExportError(f"{images}: none of the images could be read")
    else:
        samples = list(images)
    # compare() picks the precision's thresholds (one line for an unknown precision)
    report = parity.compare(parity.ort_runner(proto), engine_runner(engine, plugins), samples, scale=scale,
                            precision=precision, reference_name="onnxruntime",
                            candidate_name="tensorrt")
    ok = polygraphy_compare(engine, proto, samples, plugins=plugins, precision=precision)
    return report, ok


def polygraphy_compare(engine, proto, samples, *, plugins=None, precision: str = "fp32") -> bool:
    """Polygraphy ``Comparator``: ``TrtRunner`` (the engine) vs ``OnnxrtRunner`` (CPU)."""
    from .trt import flavour
    if flavour() == "tensorrt_rtx":
        os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import CompareFunc, Comparator

    from export import ort_ops
    if plugins:
        from .build import load_plugins
        load_plugins(import_trt(), plugins)
    data = [{INPUT_NAME: np.ascontiguousarray(s.lr, dtype=np.float32)} for s in samples]
    runners = [TrtRunner(EngineFromBytes(Path(engine).read_bytes()), name="tensorrt"),
               OnnxrtRunner(lambda: ort_ops.session(proto), name="onnxruntime")]
    results = Comparator.run(runners, data_loader=data)
    from export import parity
    rule = parity.THRESHOLDS[precision]
    tol = (rule.atol, rule.rtol)  # the rule export.parity's report applies, so both verdicts agree
    return bool(Comparator.compare_accuracy(
        results, compare_func=CompareFunc.simple(atol=tol[0], rtol=tol[1])))


def parity_engine_main(engine: str, onnx_path: str, images: str | None = None, plugins: str | None = None,
                       limit: int | None = None, json_path: str | None = None) -> int:
    """``python -m export.parity --engine E --onnx F``: print the report; 0 when it passes."""
    report, poly_ok = compare_engine(engine, onnx_path, images, plugins=plugins, limit=limit)
    print(report.table())
    print(f"polygraphy Comparator (TrtRunner vs OnnxrtRunner): {'PASS' if poly_ok else 'FAIL'}")
    if json_path:
        print(f"wrote {report.save_json(json_path)}")
    return 0 if report.passed and poly_ok else 1
