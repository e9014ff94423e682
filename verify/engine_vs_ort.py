"""Polygraphy's ``Comparator`` on an engine and its ONNX graph: ``TrtRunner`` vs ``OnnxrtRunner`` on
the same inputs, under the tolerance rule the caller passes (``verify.parity`` passes its own, so
that the report and this verdict agree); ``python -m export.parity --engine E --onnx F`` runs both.
The command-line equivalent is

    polygraphy run lcoan.onnx --trt --onnxrt --plugins liblcoan_plugins.so \\
        --trt-min-shapes lr:[1,3,16,16] --trt-opt-shapes lr:[1,3,270,480] \\
        --trt-max-shapes lr:[1,3,540,960] --input-shapes lr:[1,3,64,64] --atol 1e-2 --rtol 1e-2

(with ``POLYGRAPHY_USE_TENSORRT_RTX=1`` for TensorRT-RTX).

This module imports no other ``verify`` module: the parity report calls it, not the other way.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.build import load_plugins
from engine.trt import flavour, import_trt
from export import ort_ops
from lcoan.graph_io import INPUT_NAME


def polygraphy_compare(engine, proto, samples, *, rule, plugins=None) -> bool:
    """Polygraphy ``Comparator``: ``TrtRunner`` (the engine) vs ``OnnxrtRunner`` (CPU) under
    ``rule`` (``verify.parity.Thresholds``)."""
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
    return bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(**rule.compare_func_args())))
