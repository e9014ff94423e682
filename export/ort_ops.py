"""ONNX Runtime (CPU) for graphs with the ``LCoAClusterSort`` plugin node.

onnxruntime-extensions runs Python ops registered with ``@onnx_op`` only in the domain
``ai.onnx.contrib``, so :func:`for_ort` copies the model and renames the node's domain; the
file on disk keeps the TensorRT form (domain ``lcoan``). The op's body is
``lcoan.opspec.cluster_sort_reference``, the CPU reference every implementation of the plugin
is checked against, so the very graph TensorRT parses is the one run here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from lcoan import opspec

CONTRIB_DOMAIN = "ai.onnx.contrib"
_REGISTERED = False


def register() -> None:
    """Register the CPU ``LCoAClusterSort`` with onnxruntime-extensions (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    int32 = PyCustomOpDef.dt_int32  # opspec.IO_DTYPE

    @onnx_op(op_type=opspec.NAME, inputs=[int32] * len(opspec.INPUTS), outputs=[int32] * len(opspec.OUTPUTS),
             attrs={opspec.FIELD: PyCustomOpDef.dt_int64, "plugin_version": PyCustomOpDef.dt_string,
                    "plugin_namespace": PyCustomOpDef.dt_string})
    def lcoa_cluster_sort(ids, **attrs):
        perm, inv = opspec.cluster_sort_reference(np.asarray(ids), int(attrs[opspec.FIELD]))
        return perm, inv

    _REGISTERED = True


def has_plugin(proto: onnx.ModelProto) -> bool:
    return any(n.op_type == opspec.NAME for n in proto.graph.node)


def for_ort(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every plugin node moved to ``ai.onnx.contrib`` for onnxruntime-extensions."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for node in out.graph.node:
        if node.op_type == opspec.NAME and node.domain == opspec.DOMAIN:
            node.domain = CONTRIB_DOMAIN
    domains = {o.domain for o in out.opset_import}
    if CONTRIB_DOMAIN not in domains:
        out.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return out


def session(model: str | os.PathLike | onnx.ModelProto, threads: int | None = None,
            optimize: bool = True, spin: bool = True):
    """A CPU ``InferenceSession`` for a graph of either sort form.

    ``spin=False`` stops idle worker threads from spinning, which matters when several sessions
    take turns on the same cores (side-by-side timing): a spinning pool steals them.
    """
    import onnxruntime as ort

    proto = model if isinstance(model, onnx.ModelProto) else None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if proto is None:  # one line for an empty, truncated or non-ONNX file, or missing external data
        from lcoan.graph_io import load_onnx
        proto = load_onnx(Path(model))
    if has_plugin(proto):
        from onnxruntime_extensions import get_library_path
        register()
        options.register_custom_ops_library(get_library_path())
        proto = for_ort(proto)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
