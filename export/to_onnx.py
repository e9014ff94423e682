"""Export LCoAN to ONNX: frozen centroids, cluster assignment, stable sort and windowed attention
as one graph with dynamic batch, height and width.

    python -m export.to_onnx [--weights W] [-o F.onnx] [--sort onnx|plugin]
                             [--opset N] [--precision fp32|fp16 | --fp32 | --fp16] [--scale S]
                             [--io float|rgb8|i420 [--colorspace bt601|bt709] [--range limited|full]]

``--fp32``/``--fp16`` are the shorthands of ``--precision``; ``--dtype``, its old name, still works.
The default output names what it holds: ``<weights stem>[_plugin][_<io>]_<precision>.onnx`` in the
current folder, e.g. ``lcoan_edge_x2_fp32.onnx`` for the bundled weights, or
``lcoan_edge_x2_i420_fp16.onnx``.

``--io`` (``lcoan.graph_io``): ``float`` (default) takes float32 RGB NCHW in [0, 1]; ``rgb8`` takes
and returns uint8 RGB NHWC; ``i420`` takes and returns uint8 Y, U, V planes (4:2:0), converted
with ``--colorspace`` (default bt709) and ``--range`` (default limited), both recorded in the
graph's metadata. The conversions stay FP32 in an FP16 graph (``export.integer_io``).

``--sort onnx`` keeps the sort as a stable counting sort of standard ops (Equal, CumSum,
ReduceSum, ScatterElements; no TopK, so no 3840-element cap in TensorRT). ``--sort plugin``
replaces that subgraph by one ``LCoAClusterSort`` node (domain ``lcoan``) for the TensorRT
plugin; ONNX Runtime runs it through ``export.ort_ops``.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from lcoan.graph_io import (COLORSPACES, INPUT_NAME, IO_MODES, OUTPUT_NAME, PRODUCER, RANGES, GraphIO, GraphMetadata,
                            io_for, write_metadata)
from lcoan.model.network import LCoAN
from lcoan.model.sort import counting_sort

from .errors import ExportError, run_cli
from . import graph as graph_lib

DEFAULT_OPSET = 17
# Clip on the int64 cluster ids (12); CumSum and ScatterElements (11).
MIN_OPSET = 12
SORTS = ("onnx", "plugin")
DTYPES = ("fp32", "fp16")
# Ops that would sort positions (TopK is capped at K = 3840 in TensorRT).
FORBIDDEN_SORT_OPS = ("TopK",)


class ClusterSortScope(nn.Module):
    """The counting sort as a module, so that its nodes carry the name scope ``.../sort_fn/``."""

    def forward(self, ids: torch.Tensor, num_clusters: int):
        return counting_sort(ids, num_clusters)


def _max_opset() -> int:
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the graph uses Clip on int64 ids, CumSum and "
                          f"ScatterElements, which need opset >= {MIN_OPSET}")
    if opset > _max_opset():
        raise ExportError(f"opset {opset} is newer than this onnx package supports ({_max_opset()})")


def prepare(model: LCoAN) -> LCoAN:
    """An eval-mode FP32 copy, reparameterised convs collapsed, whose LSP modules sort with the
    scoped counting sort."""
    model = copy.deepcopy(model).eval().float().cpu().collapse_reparam()
    for module in list(model.modules()):
        if hasattr(module, "sort_fn"):
            module.sort_fn = ClusterSortScope()
    return model


def _torch_export(model: LCoAN, opset: int) -> onnx.ModelProto:
    sample = torch.rand(1, 3, 24, 20)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (sample,), buffer, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}})
        except Exception as exc:  # unsupported op at this opset, tracing failure
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {first[:200]}") from None
    return onnx.load_model_from_string(buffer.getvalue())


def check_finite_model(model: LCoAN, name: str = "model") -> None:
    """Refuse NaN/Inf weights: the graph would run and give black or white images."""
    from lcoan.checkpoint import first_non_finite
    found = first_non_finite(model.state_dict())
    if found:
        raise ExportError(f"{name}: tensor {found[0]!r} has {found[1]} non-finite value(s) (NaN/Inf); not exported")


def check_finite_graph(proto: onnx.ModelProto, path: str | Path = "graph") -> None:
    """Refuse an ONNX graph whose float initializers hold NaN/Inf, naming the first one."""
    import numpy as np
    from onnx import numpy_helper
    for init in proto.graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                              onnx.TensorProto.BFLOAT16):
            values = numpy_helper.to_array(init)
            bad = int(values.size - np.count_nonzero(np.isfinite(values.astype(np.float32))))
            if bad:
                raise ExportError(f"{path}: initializer {init.name!r} has {bad} non-finite value(s) (NaN/Inf); "
                                  "the weights it was exported from are broken")


def check_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Full checker plus strict shape inference; returns the shape-inferred model."""
    onnx.checker.check_model(proto, full_check=True)
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def io_spec(io: str | GraphIO = "float", colorspace: str | None = None, range: str | None = None,  # noqa: A002
            scale: int | None = None) -> GraphIO:
    """The :class:`GraphIO` of ``--io``/``--colorspace``/``--range``, or a one-line ExportError."""
    if isinstance(io, GraphIO):
        return io
    try:
        return io_for(io, colorspace, range, scale)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def build_onnx(model: LCoAN, sort: str = "onnx", opset: int = DEFAULT_OPSET,
               dtype: str = "fp32", io: str | GraphIO = "float", colorspace: str | None = None,
               range: str | None = None) -> onnx.ModelProto:  # noqa: A002
    """The exported graph in memory (see :func:`export_onnx`)."""
    spec = io_spec(io, colorspace, range, model.config.scale)
    if sort not in SORTS:
        raise ExportError(f"sort must be one of {SORTS}, got {sort!r}")
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    check_opset(opset)
    check_finite_model(model)
    proto = _torch_export(prepare(model), opset)
    bad = [n.name for n in proto.graph.node if n.op_type in FORBIDDEN_SORT_OPS]
    if bad:
        raise ExportError(f"exported graph sorts with TopK ({bad[0]}); TensorRT caps TopK at 3840")
    if sort == "plugin":
        proto = graph_lib.replace_counting_sort(proto)
    if dtype == "fp16":
        from .precision import to_fp16
        proto = to_fp16(proto)
    write_metadata(proto, GraphMetadata(scale=model.config.scale, sort=sort, dtype=dtype,
                                        config=model.config.to_dict()))
    proto = with_io(proto, spec, opset=opset)
    proto.producer_name = PRODUCER
    check_graph(proto)
    return proto


def with_io(proto: onnx.ModelProto, io: str | GraphIO, colorspace: str | None = None, range: str | None = None,  # noqa: A002
            opset: int | None = None) -> onnx.ModelProto:
    """A float graph of this exporter (FP32 or FP16, either sort) with the integer I/O ``io``
    attached (``export.integer_io``) and recorded in its metadata; ``io="float"``: a copy.

    What ``--io`` does after the float export; also for graphs already on disk."""
    import dataclasses

    from lcoan.graph_io import read_metadata
    spec = io_spec(io, colorspace, range)
    meta = read_metadata(proto)
    if meta.io not in (None, "float"):
        raise ExportError(f"the graph already has {meta.io} I/O; integer I/O goes around a float graph")
    if spec.integer:
        from .integer_io import attach_io
        default = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), DEFAULT_OPSET)
        proto = attach_io(proto, spec, opset or default)
    else:
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        proto = out
    # a float graph stays as before --io existed: no io key (read_io takes a graph without one as float)
    write_metadata(proto, dataclasses.replace(meta, io=spec.mode if spec.integer else None,
                                              colorspace=spec.colorspace, range=spec.range))
    return proto


def export_onnx(model: LCoAN, path: str | Path, sort: str = "onnx", opset: int = DEFAULT_OPSET,
                dtype: str = "fp32", io: str | GraphIO = "float", colorspace: str | None = None,
                range: str | None = None, inputs=()) -> Path:  # noqa: A002
    """Export ``model`` to ``path``: input ``lr`` float32 NCHW, output ``sr``; dynamic N, H, W.

    ``sort``: ``"onnx"`` (counting sort of standard ops) or ``"plugin"`` (one LCoAClusterSort
    node). ``dtype``: ``"fp32"`` or ``"fp16"`` (FP16 inside, float32 input and output; cluster
    assignment and softmax stay FP32). ``io``: ``"float"``, ``"rgb8"`` or ``"i420"`` (with
    ``colorspace`` and ``range``; see ``lcoan.graph_io``). The file is written atomically
    (``lcoan.graph_io.save_onnx``); ``inputs`` are files it must not replace. Returns ``path``.
    """
    from lcoan.graph_io import save_onnx
    from lcoan.safeio import check_writable, refuse_overwrite
    refuse_overwrite(path, inputs, what="ONNX graph")
    check_writable(path, what="ONNX graph")
    proto = build_onnx(model, sort=sort, opset=opset, dtype=dtype, io=io, colorspace=colorspace, range=range)
    return save_onnx(proto, path, inputs=inputs)


def load_weights(weights: str | None, scale: int | None) -> LCoAN:
    """``--weights``: a weights-table name, a file, or None for the bundled default of ``scale``."""
    import lcoan
    return lcoan.load_model(lcoan.resolve_weights(weights, scale), scale=scale)


def io_tag(spec: GraphIO | str = "float") -> str:
    """The file-name part of an I/O mode: ``""`` (float), ``_rgb8``, ``_i420`` (BT.709 limited) or
    ``_i420_bt601``, ``_i420_full``, ``_i420_bt601_full``: two graphs never share a default name."""
    spec = io_spec(spec)
    if not spec.integer:
        return ""
    tag = f"_{spec.mode}"
    if spec.mode == "i420":
        tag += ("" if spec.colorspace == "bt709" else f"_{spec.colorspace}") + ("" if spec.range == "limited" else "_full")
    return tag


def default_onnx_path(weights: str | None, scale: int, sort: str = "onnx", dtype: str = "fp32",
                      io: GraphIO | str = "float") -> Path:
    """``<weights stem>[_plugin][_<io>]_<dtype>.onnx`` in the current folder: FP32/FP16, both sort
    forms and every I/O mode never share a file name."""
    import lcoan
    stem = Path(weights).stem if weights else Path(lcoan.default_weights(scale)).stem
    return Path(f"{stem}{'_plugin' if sort == 'plugin' else ''}{io_tag(io)}_{dtype}.onnx")


def weights_path(weights: str | None, scale: int | None) -> Path | None:
    """The file ``--weights`` names (None when it names nothing that exists yet)."""
    import lcoan
    try:
        return Path(lcoan.resolve_weights(weights, scale))
    except Exception:  # noqa: BLE001 - an unknown name: load_weights reports it in one line
        return None


def main(argv: list[str] | None = None) -> int:
    from lcoan.cli import ArgumentParser, add_output_arg, add_precision_arg
    parser = ArgumentParser(prog="python -m export.to_onnx", description=__doc__.split("\n\n")[0])
    from lcoan.cli import WEIGHTS_HELP
    parser.add_argument("--weights", metavar="NAME|FILE", help=WEIGHTS_HELP)
    add_output_arg(parser, "output graph (default: <weights stem>[_plugin][_<io>]_<precision>.onnx, "
                           "e.g. lcoan_edge_x2_fp32.onnx)", metavar="F.onnx")
    parser.add_argument("--sort", choices=SORTS, default="onnx",
                        help="stable sort as standard ops (counting sort) or one LCoAClusterSort plugin node "
                             "(default: %(default)s)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, >= {MIN_OPSET} (default: %(default)s)")
    add_precision_arg(parser, DTYPES, default="fp32",
                      help="fp16: FP16 inside, float32 input/output, cluster assignment and softmax in FP32 "
                           "(default: %(default)s)", aliases=("--dtype",))
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=None,
                        help="expected scale; an error if the weights are for another one (default: the weights')")
    parser.add_argument("--io", choices=IO_MODES, default="float",
                        help="graph I/O: float32 RGB NCHW in [0, 1] (float), uint8 RGB NHWC (rgb8), or uint8 "
                             "Y, U, V 4:2:0 planes (i420); conversions inside the graph (default: %(default)s)")
    parser.add_argument("--colorspace", choices=COLORSPACES, default=None,
                        help="YCbCr matrix of an i420 graph, recorded in its metadata (default: bt709)")
    parser.add_argument("--range", choices=RANGES, default=None,
                        help="code range of an i420 graph: limited (16-235, video) or full (0-255), recorded "
                             "in its metadata (default: limited)")
    args = parser.parse_args(argv)
    check_opset(args.opset)
    spec = io_spec(args.io, args.colorspace, args.range)
    from lcoan.graph_io import save_onnx
    from lcoan.safeio import check_writable, refuse_overwrite
    # Outputs are checked before the weights are loaded: the own input, the folder, the space.
    source = weights_path(args.weights, args.scale)
    out = Path(args.output) if args.output else None
    inputs = [source] if source is not None else []
    if out is not None:
        refuse_overwrite(out, inputs, what="--out graph")
        size = source.stat().st_size if source is not None and source.is_file() else None
        check_writable(out, need_bytes=size and size // (2 if args.precision == "fp16" else 1), what="ONNX graph")
    model = load_weights(args.weights, args.scale)
    if out is None:
        out = default_onnx_path(args.weights, model.scale, args.sort, args.precision, spec)
        refuse_overwrite(out, inputs, what="ONNX graph")
        check_writable(out, what="ONNX graph")
    proto = build_onnx(model, sort=args.sort, opset=args.opset, dtype=args.precision, io=spec)
    save_onnx(proto, out, inputs=inputs)
    counts = graph_lib.op_counts(proto)
    print(f"wrote {out} (x{model.scale}, sort={args.sort}, dtype={args.precision}, io={io_spec(spec).describe()}, "
          f"opset={args.opset}, {sum(counts.values())} nodes)")
    return 0


def cli() -> None:
    """The console entry point (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    run_cli(main)
