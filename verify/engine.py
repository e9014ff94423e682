"""Engine vs ONNX Runtime on the same images: the parity report of :mod:`verify.parity` (drift and
Y-PSNR per image) and Polygraphy's ``Comparator`` (``TrtRunner`` vs ``OnnxrtRunner``) under one
tolerance rule; ``python -m export.parity --engine E --onnx F`` runs it. The command-line
equivalent of the Polygraphy half is

    polygraphy run lcoan.onnx --trt --onnxrt --plugins liblcoan_plugins.so \\
        --trt-min-shapes lr:[1,3,16,16] --trt-opt-shapes lr:[1,3,270,480] \\
        --trt-max-shapes lr:[1,3,540,960] --input-shapes lr:[1,3,64,64] --atol 1e-2 --rtol 1e-2

(with ``POLYGRAPHY_USE_TENSORRT_RTX=1`` for TensorRT-RTX).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from engine import cache
from engine.build import load_plugins
from engine.runtime import engine_runner, require_runtime
from engine.trt import flavour, import_trt
from export import ort_ops
from export.errors import ExportError
from lcoan.graph_io import INPUT_NAME, load_onnx, read_metadata

from . import parity


# --------------------------------------------------------------------------- comparisons
def compare_engine(engine: str | os.PathLike, onnx_path: str | os.PathLike, images=None, *,
                   plugins: str | os.PathLike | None = None, scale: int | None = None,
                   limit: int | None = None, precision: str | None = None):
    """Engine vs ONNX Runtime on the same images: ``(parity.Report, polygraphy_ok)``.

    ``images``: a folder for ``export.samples.load_samples`` or a list of ``Sample``; default
    Set5 + Set14. The report is ``verify.parity``'s (drift, Y-PSNR per image); Polygraphy's
    ``Comparator`` checks the same outputs with its own tolerances.
    """
    from export.precision import graph_precision
    require_runtime()
    proto = load_onnx(onnx_path)
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
    if flavour() == "tensorrt_rtx":
        os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import CompareFunc, Comparator

    if plugins:
        load_plugins(import_trt(), plugins)
    data = [{INPUT_NAME: np.ascontiguousarray(s.lr, dtype=np.float32)} for s in samples]
    runners = [TrtRunner(EngineFromBytes(Path(engine).read_bytes()), name="tensorrt"),
               OnnxrtRunner(lambda: ort_ops.session(proto), name="onnxruntime")]
    results = Comparator.run(runners, data_loader=data)
    rule = parity.THRESHOLDS[precision]
    tol = (rule.atol, rule.rtol)  # the rule verify.parity's report applies, so both verdicts agree
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
