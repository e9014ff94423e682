"""The ONNX graph an engine is built from, in the engine's precision: a given graph as it is, or
converted to FP16 (``export.precision``), or calibrated to a Q/DQ INT8 graph (``calib``); or
exported from weights first (``export.to_onnx``). ``python -m export.to_trt`` and the Triton
repository writer (``serve.repository``) both start here, so it sits in the engine stage, above
``export`` and ``calib``.
"""
from __future__ import annotations

import importlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from export.precision import graph_precision

from . import cache
from .build import has_plugin_nodes
from .errors import EngineError


# --------------------------------------------------------------------------- graph files
def sibling(out: Path, suffix: str) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}{suffix}")


def strip_precision(stem: str) -> str:
    """``stem`` without a trailing precision tag (``x_int8`` -> ``x``)."""
    return re.sub(r"[._-](fp32|fp16|int8)$", "", stem)


def graph_path(out: Path, precision: str) -> Path:
    """The ONNX graph in ``precision`` written for engine ``out``: ``<stem>_<precision>.onnx``
    (a precision suffix of the engine's stem is replaced: ``x_int8.engine`` -> ``x_fp32.onnx``)."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{strip_precision(stem)}_{precision}.onnx")


@dataclass
class GraphSource:
    path: Path
    precision: str
    sort: str
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def _calibrate(fp32: Path, out: Path, calib_dir: str, method: str, num: int, tile: Sequence[int],
               log: Callable[[str], None]) -> tuple[Path, float]:
    """Q/DQ graph of ``fp32`` (``python -m calib``), reused when source and images are unchanged."""
    # not `from calib import quantize`: calib/__init__ re-exports the function of that name
    quant = importlib.import_module("calib.quantize")
    stamp = {"source_sha256": cache.sha256_file(fp32),
             "images": quant.images_digest(calib_dir, num, tile, None), "method": method}
    stamp_path = sibling(out, ".calib.json")
    if out.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == stamp:
                log(f"reusing {out} (same FP32 graph and calibration images)")
                return out, 0.0
        except ValueError:
            pass
    t0 = time.perf_counter()
    try:
        quant.quantize(fp32, out, calib_dir, method=method, num=num, tile=tile,
                       exclude=quant.default_exclusions(fp32))
    except quant.CalibrationError as exc:
        raise EngineError(str(exc)) from None
    from lcoan.safeio import atomic_write
    atomic_write(stamp_path, json.dumps(stamp, indent=2) + "\n")
    return out, time.perf_counter() - t0


def prepare_graph(*, onnx_path: str | None, weights: str | None, precision: str, sort: str, out: Path,
                  calib: str | None = None, calib_method: str = "minmax", calib_num: int = 32,
                  calib_tile: Sequence[int] = (64, 64), scale: int | None = None,
                  log: Callable[[str], None] = print, io=None) -> GraphSource:
    """The ONNX graph the engine is built from, in ``precision`` (written next to ``out``).

    ``io``: the I/O mode when exporting from weights (``lcoan.graph_io.GraphIO`` or a mode name;
    a graph given as ``onnx_path`` keeps its own)."""
    from lcoan.graph_io import load_onnx, save_onnx

    timings: dict = {}
    if onnx_path:
        src = Path(onnx_path)
        proto = load_onnx(src)
        have = graph_precision(proto)
        graph_sort = "plugin" if has_plugin_nodes(proto) else "onnx"
        if have == precision:
            return GraphSource(src, precision, graph_sort, timings)
        if have != "fp32":
            raise EngineError(f"{src} is a {have} graph; --{precision} needs an FP32 graph "
                              f"(or a {precision} one) as --onnx")
        fp32 = src
    else:
        from export.to_onnx import export_onnx, load_weights
        t0 = time.perf_counter()
        model = load_weights(weights, scale)
        graph_sort = sort
        dtype = "fp16" if precision == "fp16" else "fp32"
        target = graph_path(out, dtype)
        export_onnx(model, target, sort=sort, dtype=dtype, io=io or "float",
                    inputs=[p for p in (weights, calib) if p])
        timings["export_s"] = round(time.perf_counter() - t0, 3)
        if precision != "int8":
            return GraphSource(target, precision, graph_sort, timings)
        fp32 = target
    if precision == "fp16":
        from export.precision import to_fp16
        t0 = time.perf_counter()
        target = graph_path(out, "fp16")
        if target.resolve() == Path(fp32).resolve():
            raise EngineError(f"{fp32}: the FP16 graph would overwrite this FP32 input; rename it or pass --out")
        save_onnx(to_fp16(load_onnx(fp32)), target, inputs=[fp32])
        timings["fp16_s"] = round(time.perf_counter() - t0, 3)
        return GraphSource(target, precision, graph_sort, timings)
    if precision == "int8":
        if not calib:
            raise EngineError("--int8 needs calibration images (--calib DIR) or a Q/DQ graph made by "
                              "`python -m calib` as --onnx")
        if graph_path(out, "int8").resolve() == Path(fp32).resolve():
            raise EngineError(f"{fp32}: the INT8 graph would overwrite this FP32 input; rename it or pass --out")
        target, seconds = _calibrate(Path(fp32), graph_path(out, "int8"), calib, calib_method,
                                     calib_num, calib_tile, log)
        timings["calibrate_s"] = round(seconds, 3)
        return GraphSource(target, precision, graph_sort, timings)
    return GraphSource(Path(fp32), precision, graph_sort, timings)
