"""FP16 graphs: the maintained converter (onnxconverter-common) with FP32 islands.

FP16 everywhere except where a rounding error changes a discrete decision or overflows:
  * cluster assignment: the MatMul with the frozen centroids and the ArgMax (every node
    of the ``.../kmeans/`` scope);
  * the attention softmax: the score MatMul and the Softmax (graphs exported before the
    model used Softmax have ReduceLogSumExp, the subtraction and Exp instead).
A graph without attention (``attention="none"``) has no such islands. Input ``lr`` and output
``sr`` stay float32 (``keep_io_types``), and the conversions of an integer-I/O graph
(``export.integer_io``: nodes named ``io_in/...``, ``io_out/...``) stay FP32 whole, so 8-bit rounding and colour matrices never see FP16. This form parses and builds in
TensorRT-RTX (strongly typed networks take the types from the graph).
"""
from __future__ import annotations

import warnings

import onnx
from onnxconverter_common import float16

KMEANS_SCOPE = "/kmeans/"


def fp32_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept in FP32 (see the module docstring)."""
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    from .integer_io import is_io_node
    keep = [n.name for n in nodes if KMEANS_SCOPE in n.name or is_io_node(n.name)]
    for lse in (n for n in nodes if n.op_type in ("ReduceLogSumExp", "Softmax")):
        keep.append(lse.name)
        scores = producer.get(lse.input[0])
        if scores is not None and scores.op_type == "MatMul":
            keep.append(scores.name)
        for sub in consumers.get(lse.output[0], []):
            keep.append(sub.name)
            keep += [c.name for c in consumers.get(sub.output[0], []) if c.op_type == "Exp"]
    return list(dict.fromkeys(keep))


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 copy of an FP32 graph, float32 at its inputs and outputs."""
    block = fp32_nodes(proto)
    has_attention = any(n.op_type == "ArgMax" or "/attention/" in n.name for n in proto.graph.node)
    if has_attention and not any(KMEANS_SCOPE in name for name in block):  # renamed scope: never silently FP16
        from .errors import ExportError
        raise ExportError("no cluster-assignment nodes (scope '/kmeans/') found to keep in FP32")
    with warnings.catch_warnings():  # "float32 number ... will be truncated": tiny weights
        warnings.simplefilter("ignore", UserWarning)
        out = float16.convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST),
            node_block_list=block)
    return out


def is_fp16(proto: onnx.ModelProto) -> bool:
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)


def graph_precision(proto: onnx.ModelProto) -> str:
    """``int8`` (Q/DQ nodes), ``fp16`` (FP16 weights) or the metadata's dtype, else ``fp32``."""
    # The graph itself decides first: an FP16 graph converted from an FP32 export keeps that
    # export's metadata (dtype fp32), and the FP32 tolerance would fail it wrongly.
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        return "int8"
    if is_fp16(proto):
        return "fp16"
    from lcoan.graph_io import read_metadata
    return read_metadata(proto).dtype or "fp32"
