"""Integer graph I/O (``export.to_onnx --io rgb8|i420``): the float graph with its conversions
attached, so that a TensorRT engine, ONNX Runtime or Triton takes and returns uint8 frames.

The float graph (either sort form, FP32 or FP16 inside with float32 I/O) stays as it is, node for
node; two small graphs traced from :mod:`lcoan.color` are joined to it:

    rgb8:  lr uint8 (N, H, W, 3) -> [io_in: /255, NHWC -> NCHW] -> float graph
           -> [io_out: clamp [0, 1], x255, round, NCHW -> NHWC] -> sr uint8 (N, sH, sW, 3)
    i420:  y, u, v uint8 -> [io_in: 4:2:0 chroma up-sampling, YCbCr -> RGB, clamp] -> float graph
           -> [io_out: RGB -> YCbCr, chroma down-sampling, round] -> y_sr, u_sr, v_sr uint8

Every node of the two ends carries the name prefix ``io_in/`` or ``io_out/`` and computes in
float32: the FP16 pass (``export.precision``) keeps them out, and calibration quantises only
Conv, so a colour matrix or a rounding never runs in FP16 or INT8.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import compose
from torch import nn

from lcoan import color
from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME, GraphIO

from .errors import ExportError

IN_SCOPE, OUT_SCOPE = "io_in/", "io_out/"
IO_SCOPES = (IN_SCOPE, OUT_SCOPE)
_FLOAT_IN, _FLOAT_OUT = INPUT_NAME + "_float", OUTPUT_NAME + "_float"


class FromFrames(nn.Module):
    """uint8 frames (rgb8: one NHWC tensor; i420: the y, u, v planes) -> float32 RGB NCHW [0, 1]."""

    def __init__(self, spec: GraphIO):
        super().__init__()
        self.mode, self.colorspace, self.range = spec.mode, spec.colorspace, spec.range

    def forward(self, *planes: torch.Tensor) -> torch.Tensor:
        if self.mode == "rgb8":
            return color.rgb8_to_float(planes[0])
        return color.i420_to_rgb(*planes, colorspace=self.colorspace, range=self.range)


class ToFrames(nn.Module):
    """float RGB NCHW -> uint8 frames (rgb8: NHWC; i420: y, u, v)."""

    def __init__(self, spec: GraphIO):
        super().__init__()
        self.mode, self.colorspace, self.range = spec.mode, spec.colorspace, spec.range

    def forward(self, rgb: torch.Tensor):
        if self.mode == "rgb8":
            return color.float_to_rgb8(rgb)
        return color.rgb_to_i420(rgb, colorspace=self.colorspace, range=self.range)


class WithFrames(nn.Module):
    """``model`` between :class:`FromFrames` and :class:`ToFrames`: the eager reference of an
    integer graph (parity, tests) and what the app's torch backend computes on the device."""

    def __init__(self, model: nn.Module, spec: GraphIO):
        super().__init__()
        self.model, self.pre, self.post = model, FromFrames(spec), ToFrames(spec)

    def forward(self, *planes: torch.Tensor):
        return self.post(self.model(self.pre(*planes)))


def _trace(module: nn.Module, args: tuple, inputs, outputs, axes: dict, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=list(inputs),
                              output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - an op this opset lacks
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ExportError(f"exporting the {type(module).__name__} conversions failed at opset {opset}: "
                              f"{first[:200]}") from None
    return onnx.load_model_from_string(buffer.getvalue())


def _ends(spec: GraphIO, opset: int) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The two conversion graphs: frames -> ``lr`` (float) and ``sr`` (float) -> frames."""
    n, h, w = 1, 24, 20
    frame_axes = {0: "batch", 1: "height", 2: "width"}
    out_axes = {0: "batch", 1: "out_height", 2: "out_width"}
    if spec.mode == "rgb8":
        sample = (torch.zeros(n, h, w, 3, dtype=torch.uint8),)
        in_axes = {spec.inputs[0]: frame_axes}
        post_axes = {spec.outputs[0]: out_axes}
    else:
        sample = (torch.zeros(n, h, w, dtype=torch.uint8), torch.zeros(n, h // 2, w // 2, dtype=torch.uint8),
                  torch.zeros(n, h // 2, w // 2, dtype=torch.uint8))
        chroma = {0: "batch", 1: "chroma_height", 2: "chroma_width"}
        out_chroma = {0: "batch", 1: "out_chroma_height", 2: "out_chroma_width"}
        in_axes = dict(zip(spec.inputs, (frame_axes, chroma, chroma)))
        post_axes = dict(zip(spec.outputs, (out_axes, out_chroma, out_chroma)))
    # The float edges get their own names: rgb8's frames are called lr and sr too.
    pre = _trace(FromFrames(spec), sample, spec.inputs, [_FLOAT_IN],
                 {**in_axes, _FLOAT_IN: {0: "batch", 2: "height", 3: "width"}}, opset)
    post = _trace(ToFrames(spec), (torch.rand(n, 3, 2 * h, 2 * w),), [_FLOAT_OUT], spec.outputs,
                  {_FLOAT_OUT: {0: "batch", 2: "out_height", 3: "out_width"}, **post_axes}, opset)
    pre = compose.add_prefix(pre, IN_SCOPE, rename_inputs=False)      # its output: io_in/lr_float
    post = compose.add_prefix(post, OUT_SCOPE, rename_outputs=False)  # its input: io_out/sr_float
    return pre, post


def attach_io(core: onnx.ModelProto, spec: GraphIO, opset: int) -> onnx.ModelProto:
    """``core`` (input ``lr``, output ``sr``, float32) with the integer ends of ``spec`` joined to it.

    The core's nodes, initializers and names are kept as they are; only its two I/O edges are
    renamed to the ends' ``io_in/lr_float`` and ``io_out/sr_float``. Metadata is the caller's to write.
    """
    if spec.mode == "float":
        return core
    ins, outs = [v.name for v in core.graph.input], [v.name for v in core.graph.output]
    if (ins, outs) != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"integer I/O goes around a float graph ({INPUT_NAME} -> {OUTPUT_NAME}), not {ins} -> {outs}")
    for v in (*core.graph.input, *core.graph.output):
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"graph {v.name!r} is not float32; integer I/O goes around float32 I/O")
    pre, post = _ends(spec, opset)
    lr, sr = IN_SCOPE + _FLOAT_IN, OUT_SCOPE + _FLOAT_OUT
    model = onnx.ModelProto()
    model.CopyFrom(core)
    g = model.graph
    for node in g.node:
        node.input[:] = [lr if i == INPUT_NAME else i for i in node.input]
        node.output[:] = [sr if o == OUTPUT_NAME else o for o in node.output]
    nodes = [*pre.graph.node, *g.node, *post.graph.node]
    del g.node[:]
    g.node.extend(nodes)
    for end in (pre, post):
        g.initializer.extend(end.graph.initializer)
        g.value_info.extend(end.graph.value_info)
    g.value_info.extend([*pre.graph.output, *post.graph.input])  # the core's former I/O, now inner edges
    del g.input[:]
    g.input.extend(pre.graph.input)
    del g.output[:]
    g.output.extend(post.graph.output)
    have = {o.domain: o.version for o in model.opset_import}
    for end in (pre, post):
        for o in end.opset_import:
            if o.domain in have and have[o.domain] != o.version:
                raise ExportError(f"opset of the conversions ({o.domain or 'ai.onnx'} {o.version}) differs "
                                  f"from the graph's ({have[o.domain]})")
            if o.domain not in have:
                model.opset_import.append(o)
                have[o.domain] = o.version
    return model


def is_io_node(name: str) -> bool:
    """Whether a node belongs to the conversions (kept in FP32, never quantised)."""
    return name.startswith(IO_SCOPES)


# --------------------------------------------------------------------------- feeding a graph
def even(lr: np.ndarray) -> np.ndarray:
    """``lr`` [N, 3, h, w] cropped to an even height and width (its last row/column dropped)."""
    h, w = lr.shape[-2] - lr.shape[-2] % 2, lr.shape[-1] - lr.shape[-1] % 2
    return lr[..., :h, :w]


def quantize_rgb(lr: np.ndarray) -> np.ndarray:
    """float RGB [N, 3, h, w] in [0, 1] -> the 8-bit image it stands for, as float32 (levels / 255).

    What an rgb8 graph can be given: the float model's reference input for a parity check."""
    return (np.clip(np.round(np.asarray(lr, np.float32) * 255.0), 0, 255) / 255.0).astype(np.float32)


def frames_from_rgb(spec: GraphIO, lr: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's inputs for float RGB ``lr`` [N, 3, h, w] in [0, 1] (calibration, parity).

    float: ``lr`` itself; rgb8: its 8-bit levels, NHWC; i420: ``lcoan.color.rgb_to_i420`` of it in
    the graph's colour space and range (``lr`` must have an even height and width: :func:`even`).
    """
    lr = np.ascontiguousarray(lr, dtype=np.float32)
    if spec.mode == "float":
        return {spec.inputs[0]: lr}
    t = torch.from_numpy(lr)
    if spec.mode == "rgb8":
        return {spec.inputs[0]: np.ascontiguousarray(color.float_to_rgb8(t).numpy())}
    spec.check_size(lr.shape[-2], lr.shape[-1], "image")
    planes = color.rgb_to_i420(t, spec.colorspace, spec.range)
    return {name: np.ascontiguousarray(p.numpy()) for name, p in zip(spec.inputs, planes)}


def rgb_from_frames(spec: GraphIO, outputs) -> np.ndarray:
    """float32 RGB [N, 3, H, W] in [0, 1] of a graph's outputs (a list in ``spec.outputs`` order)."""
    if spec.mode == "float":
        return np.asarray(outputs[0], dtype=np.float32)
    if spec.mode == "rgb8":
        return color.rgb8_to_float(torch.from_numpy(np.asarray(outputs[0]))).numpy()
    y, u, v = (torch.from_numpy(np.ascontiguousarray(o)) for o in outputs[:3])
    return color.i420_to_rgb(y, u, v, spec.colorspace, spec.range).numpy()
