"""The exported graph's interface: its input/output names, the metadata it carries, and the one
reader and writer of graph files.

One home for all of it, at the bottom of the stack: the exporter writes them, calibration copies
and extends them, and the parity report, the engine build, the Triton repository and the app
backends read them. The metadata functions take any ``ModelProto`` (they touch only
``metadata_props``); ``onnx`` is imported only by :func:`load_onnx` and :func:`save_onnx`.

    meta = read_metadata(load_onnx("lcoan_edge_x2_fp32.onnx"))
    meta.scale, meta.dtype, meta.sort      # 2, "fp32", "onnx"
    io = read_io("lcoan_edge_x2_i420_fp16.onnx")
    io.mode, io.inputs, io.outputs         # "i420", ("y", "u", "v"), ("y_sr", "u_sr", "v_sr")

I/O modes (``export.to_onnx --io``):

====== ============================================ ============================================
mode   inputs                                        outputs
====== ============================================ ============================================
float  ``lr`` float32 (N, 3, H, W), RGB in [0, 1]    ``sr`` float32 (N, 3, sH, sW)
rgb8   ``lr`` uint8 (N, H, W, 3), RGB                ``sr`` uint8 (N, sH, sW, 3)
i420   ``y`` uint8 (N, H, W), ``u``, ``v`` uint8      ``y_sr`` (N, sH, sW), ``u_sr``, ``v_sr``
       (N, H/2, W/2); H, W even                      (N, sH/2, sW/2), all uint8
====== ============================================ ============================================

The integer graphs carry the conversions of :mod:`lcoan.color` (scale, layout, clamp, rounding,
and for i420 the YCbCr <-> RGB matrix of their ``colorspace`` and ``range`` and the 4:2:0 chroma
filters) in FP32 around the float network.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Union

from .errors import LcoanError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "IO_MODES", "IO_NAMES", "COLORSPACES", "RANGES", "GraphMetadata",
           "GraphIO", "MetadataError", "GraphFileError", "ColorError", "read_metadata", "write_metadata", "read_io",
           "io_for", "load_onnx", "save_onnx", "SORTS", "DTYPES"]

#: float32 NCHW RGB in [0, 1] -> float32 NCHW SR image; dynamic batch, height and width.
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
SORTS = ("onnx", "plugin")
DTYPES = ("fp32", "fp16", "int8")
IO_MODES = ("float", "rgb8", "i420")
PRODUCER = "lcoan-edge"  # ModelProto.producer_name of this project's graphs
# Colour spaces and ranges of the i420 graphs (lcoan.color converts; these names live here so that
# this module loads without torch).
COLORSPACES = ("bt601", "bt709")
RANGES = ("limited", "full")
DEFAULT_COLORSPACE, DEFAULT_RANGE = "bt709", "limited"
#: (input names, output names) of each I/O mode.
IO_NAMES = {"float": ((INPUT_NAME,), (OUTPUT_NAME,)),
            "rgb8": ((INPUT_NAME,), (OUTPUT_NAME,)),
            "i420": (("y", "u", "v"), ("y_sr", "u_sr", "v_sr"))}

# metadata_props key of each GraphMetadata field; JSON-valued fields hold objects.
_KEYS = {"scale": "lcoan_scale", "sort": "lcoan_sort", "dtype": "lcoan_dtype",
         "config": "lcoan_config", "calib": "lcoan_calib", "io": "lcoan_io",
         "colorspace": "lcoan_colorspace", "range": "lcoan_range"}
_JSON = ("config", "calib")
_CHOICES = {"io": IO_MODES, "colorspace": COLORSPACES, "range": RANGES, "sort": SORTS, "dtype": DTYPES}

PathLike = Union[str, os.PathLike]


class MetadataError(LcoanError, ValueError):
    """A metadata value that cannot be read; the message names the key."""


class ColorError(LcoanError, ValueError):
    """A colour space, range or frame size the conversions cannot take; one line."""


class GraphFileError(LcoanError, ValueError):
    """A graph file that cannot be read (missing, empty, truncated, not ONNX, missing external
    data) or written; ``str()`` is one line naming the file."""


@dataclass(frozen=True)
class GraphMetadata:
    """What this project writes into an exported graph; ``None`` where a graph does not say
    (graphs exported by other tools carry none of it)."""
    scale: int | None = None        # upscaling factor of the network
    sort: str | None = None         # "onnx" (counting sort of standard ops) or "plugin"
    dtype: str | None = None        # "fp32", "fp16" or "int8" (Q/DQ)
    # (field order is the order in the file: config after the I/O keys, so that a file cut inside
    # its metadata, which still parses, is caught by load_onnx's check that config is there)
    io: str | None = None           # "float", "rgb8" or "i420" (None: float, graphs before --io)
    colorspace: str | None = None   # i420 only: "bt601" or "bt709"
    range: str | None = None        # i420 only: "limited" or "full"
    config: dict | None = None      # LCoANConfig.to_dict() of the exported model
    calib: dict | None = None       # how an INT8 graph was calibrated (calib.quantize)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` key/value strings, for the fields that are set."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[_KEYS[f.name]] = json.dumps(value) if f.name in _JSON else str(value)
        return out


def read_metadata(proto, source: str = "graph") -> GraphMetadata:
    """The :class:`GraphMetadata` of ``proto``; ``source`` names the file in error messages."""
    props = {p.key: p.value for p in proto.metadata_props}
    values = {}
    for name, key in _KEYS.items():
        if key not in props:
            continue
        raw = props[key]
        try:
            if name == "scale":
                values[name] = int(raw)
            elif name in _JSON:
                values[name] = json.loads(raw)
            else:
                values[name] = raw
        except ValueError:
            raise MetadataError(f"{source}: metadata {key}={raw[:60]!r} is not readable") from None
        if name in ("io", "colorspace", "range") and values[name] not in _CHOICES[name]:
            raise MetadataError(f"{source}: metadata {key}={raw[:60]!r} is not one of {_CHOICES[name]}")
    meta = GraphMetadata(**values)
    if meta.scale is not None and meta.scale < 1:
        raise MetadataError(f"{source}: metadata {_KEYS['scale']}={meta.scale} is not a scale")
    return meta


def write_metadata(proto, meta: GraphMetadata) -> None:
    """Replace ``proto``'s metadata by ``meta`` (keys of other tools are dropped, as on export)."""
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)


# --------------------------------------------------------------------------- I/O of a graph
@dataclass(frozen=True)
class GraphIO:
    """How to feed a graph and read its result (see the module docstring's table).

    ``colorspace`` and ``range`` are set for ``i420`` graphs only; ``scale`` is ``None`` for a
    graph that does not record it."""
    mode: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    colorspace: str | None = None
    range: str | None = None
    scale: int | None = None

    @property
    def integer(self) -> bool:
        """uint8 in and out (``rgb8``, ``i420``)."""
        return self.mode != "float"

    @property
    def dtype(self) -> str:
        """numpy dtype name of every input and output."""
        return "float32" if self.mode == "float" else "uint8"

    def input_shapes(self, n: int, h: int, w: int) -> dict[str, tuple[int, ...]]:
        """Input name -> shape for a batch of ``n`` LR frames of ``h`` x ``w`` pixels."""
        if self.mode == "float":
            return {self.inputs[0]: (n, 3, h, w)}
        if self.mode == "rgb8":
            return {self.inputs[0]: (n, h, w, 3)}
        self.check_size(h, w)
        y, u, v = self.inputs
        return {y: (n, h, w), u: (n, h // 2, w // 2), v: (n, h // 2, w // 2)}

    def output_shapes(self, n: int, h: int, w: int, scale: int | None = None) -> dict[str, tuple[int, ...]]:
        """Output name -> shape for ``n`` LR frames of ``h`` x ``w`` (``scale``: the graph's by default)."""
        s = scale or self.scale
        if s is None:
            raise MetadataError("the graph does not record its scale; pass it")
        return dict(zip(self.outputs, GraphIO(self.mode, self.inputs, self.outputs).input_shapes(n, h * s, w * s).values()))

    def check_size(self, h: int, w: int, what: str = "frame") -> None:
        """4:2:0 graphs take even heights and widths only: one line otherwise (never padded silently)."""
        if self.mode == "i420" and (h % 2 or w % 2):
            raise ColorError(f"{what} is {w}x{h}: an i420 graph needs an even width and height (4:2:0 "
                             "chroma); crop or pad it by one pixel, or use an rgb8 or float graph")

    def describe(self) -> str:
        """One phrase for summaries: ``i420 (bt709, limited)``, ``rgb8``, ``float``."""
        return f"{self.mode} ({self.colorspace}, {self.range})" if self.mode == "i420" else self.mode


def io_for(mode: str = "float", colorspace: str | None = None, range: str | None = None,  # noqa: A002
           scale: int | None = None) -> GraphIO:
    """The :class:`GraphIO` of an I/O mode (i420 defaults to BT.709 limited range)."""
    if mode not in IO_MODES:
        raise MetadataError(f"I/O mode must be one of {IO_MODES}, got {mode!r}")
    if mode != "i420" and (colorspace or range):
        raise MetadataError(f"--colorspace and --range are for --io i420 (the {mode} graph converts no colours)")
    if mode == "i420":
        colorspace, range = colorspace or DEFAULT_COLORSPACE, range or DEFAULT_RANGE
        if colorspace not in COLORSPACES or range not in RANGES:
            raise MetadataError(f"colour space must be one of {COLORSPACES} and range one of {RANGES}, "
                                f"got {colorspace!r}, {range!r}")
    inputs, outputs = IO_NAMES[mode]
    return GraphIO(mode, inputs, outputs, colorspace, range, scale)


def _elem_type(value_info) -> int:
    return value_info.type.tensor_type.elem_type


def read_io(model_or_path, source: str | None = None) -> GraphIO:
    """The :class:`GraphIO` of a graph (a ``ModelProto`` or a file, read with :func:`load_onnx`).

    The metadata says which mode the graph is; a graph without it (exported before ``--io``, or by
    another tool) is read from its inputs: ``y``/``u``/``v`` is i420 (BT.709 limited, the default),
    a uint8 ``lr`` is rgb8, anything else float. Names that disagree with the metadata are a
    :class:`MetadataError`, so a graph is never fed the wrong way.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        source = source or str(model_or_path)
        proto = load_onnx(model_or_path, external_data=False)
    else:
        proto = model_or_path
    source = source or "graph"
    meta = read_metadata(proto, source)
    inputs = tuple(v.name for v in proto.graph.input)
    outputs = tuple(v.name for v in proto.graph.output)
    mode = meta.io
    if mode is None:
        if inputs == IO_NAMES["i420"][0]:
            mode = "i420"
        elif inputs == (INPUT_NAME,) and _elem_type(proto.graph.input[0]) == 2:  # TensorProto.UINT8
            mode = "rgb8"
        else:
            mode = "float"
    want = IO_NAMES[mode]
    if (inputs, outputs) != want:
        raise MetadataError(f"{source}: a {mode} graph has inputs {list(want[0])} and outputs {list(want[1])}, "
                            f"this one {list(inputs)} -> {list(outputs)}")
    if mode != "i420" and (meta.colorspace or meta.range):
        raise MetadataError(f"{source}: a {mode} graph with colour metadata ({meta.colorspace}, {meta.range})")
    cs = (meta.colorspace or DEFAULT_COLORSPACE) if mode == "i420" else None
    rng = (meta.range or DEFAULT_RANGE) if mode == "i420" else None
    return GraphIO(mode, inputs, outputs, cs, rng, meta.scale)


# --------------------------------------------------------------------------- graph files
def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise GraphFileError("reading and writing ONNX graphs needs the onnx package: "
                             "pip install -e '.[export]'") from None
    return onnx


def _external_files(proto, folder: Path) -> dict[str, int]:
    """Relative external-data file -> bytes the graph reads from it (offset + length, largest)."""
    from itertools import chain
    need: dict[str, int] = {}
    tensors = chain(proto.graph.initializer,
                    (a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")))
    for t in tensors:
        if t.data_location != 1:  # TensorProto.EXTERNAL
            continue
        entry = {e.key: e.value for e in t.external_data}
        location = entry.get("location", "")
        end = int(entry.get("offset", 0) or 0) + int(entry.get("length", 0) or 0)
        need[location] = max(need.get(location, 0), end)
    return need


def load_onnx(path: PathLike, *, external_data: bool = True, check: bool = True, what: str = "ONNX graph"):
    """The ``ModelProto`` in ``path``, or a one-line :class:`GraphFileError` naming the file.

    The one reader of graph files (export, calibration, parity, engine build, Triton, the app).
    Refused, each in one line: a missing file or a folder, an empty file (which protobuf would
    parse as an empty model), a truncated file or one that is not ONNX (protobuf's parse error, or
    a model without graph, outputs or IR version), external data that is missing or shorter than
    the graph says, and a graph ONNX's checker rejects (``check``; a file cut at a field boundary
    parses, but loses nodes, initializers or its opset). ``external_data=False`` reads the graph
    without its external tensors (metadata and structure only; their files are still checked to
    exist).
    """
    onnx = _import_onnx()
    path = Path(path)
    if not path.exists():
        raise GraphFileError(f"{path}: no such ONNX file")
    if path.is_dir():
        raise GraphFileError(f"{path}: is a folder, not an ONNX file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise GraphFileError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if size == 0 or not data:
        raise GraphFileError(f"{path}: empty file (0 bytes), not an {what}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # google.protobuf DecodeError, RuntimeError from the C++ parser
        raise GraphFileError(f"{path}: not a readable {what} (truncated, or not ONNX: "
                             f"{size} bytes that do not parse as an ONNX model)") from None
    if proto.ir_version < 1 or not proto.HasField("graph") or not proto.graph.node or not proto.graph.output:
        raise GraphFileError(f"{path}: not an {what} (truncated, or not ONNX: the file parses but holds no "
                             "graph with nodes and outputs)")
    for location, end in _external_files(proto, path.parent).items():
        target = path.parent / location
        if not location or os.path.isabs(location) or ".." in Path(location).parts:
            raise GraphFileError(f"{path}: external data location {location!r} is outside the graph's folder")
        if not target.is_file():
            raise GraphFileError(f"{path}: its external data file {target} is missing (it holds the graph's "
                                 "weights; keep it beside the .onnx file)")
        if target.stat().st_size < end:
            raise GraphFileError(f"{path}: its external data file {target} is truncated "
                                 f"({target.stat().st_size} bytes, the graph reads {end})")
    if external_data and _external_files(proto, path.parent):
        from onnx.external_data_helper import load_external_data_for_model
        try:
            load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:  # noqa: BLE001 - onnx raises ValueError, ValidationError, OSError
            raise GraphFileError(f"{path}: cannot read its external data ({' '.join(str(exc).split())[:200]})") from None
    if check:
        # metadata is the file's last field: a cut between its entries still parses
        meta = {p.key for p in proto.metadata_props}
        ours = proto.producer_name == PRODUCER or _KEYS["scale"] in meta
        if ours and not {_KEYS["scale"], _KEYS["sort"], _KEYS["dtype"], _KEYS["config"]} <= meta:
            raise GraphFileError(f"{path}: truncated (its lcoan metadata is incomplete)")
        try:
            if external_data or not _external_files(proto, path.parent):
                onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and friends
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise GraphFileError(f"{path}: damaged {what} (ONNX checker: {' '.join(first.split())[:200]})") from None
    return proto


# ONNX graphs over 2 GiB cannot be one protobuf; keep a margin.
_EXTERNAL_ABOVE = 1_800_000_000
_EXTERNAL_MIN_TENSOR = 1024


def _data_files(path: Path) -> list[Path]:
    """External-data files of this writer's naming beside ``path``: ``<name>.<12 hex>.data``."""
    import re
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.name) + r"\.[0-9a-f]{12}\.data$")
    return [p for p in path.parent.iterdir() if pattern.match(p.name)]


def save_onnx(proto, path: PathLike, *, external_data: bool | None = None, inputs=()) -> Path:
    """Write ``proto`` to ``path`` atomically (:mod:`lcoan.safeio`); returns ``path``.

    The graph is written under a temporary name and renamed over ``path``: a full disk, a file-size
    limit, Ctrl-C or a crash leaves an earlier file at ``path`` byte-identical, and temporary files
    a killed run left beside ``path`` are removed by the next write. ``inputs``: files this run
    read, refused as ``path`` (resolved path or same inode).

    ``external_data`` (default: only for graphs over 1.8 GB, which cannot be one protobuf) puts
    the tensors in ``<name>.<content hash>.data`` beside the graph, written (atomically) first;
    the graph's rename commits both, and data files of this naming that the new graph does not
    use are removed afterwards. A reader therefore sees the old graph with its old data or the new
    one with its new data, never a mix.
    """
    from .safeio import OutputError, atomic_write, refuse_overwrite, remove_orphans
    path = Path(path)
    refuse_overwrite(path, inputs, what="ONNX graph")
    # temporaries a killed write of this graph (or of its data files: same prefix) left; a live
    # writer's are locked and stay (safeio)
    remove_orphans(path)
    if external_data is None:
        external_data = proto.ByteSize() > _EXTERNAL_ABOVE
    if not external_data:
        try:
            data = proto.SerializeToString()
        except ValueError as exc:  # > 2 GiB
            raise OutputError(path, f"cannot serialise the graph ({exc}); save it with external data") from None
        atomic_write(path, data)
        for stale in _data_files(path):
            stale.unlink(missing_ok=True)
        return path

    import hashlib
    onnx = _import_onnx()
    from onnx.external_data_helper import set_external_data
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    big = [t for t in model.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= _EXTERNAL_MIN_TENSOR]
    digest = hashlib.sha256()
    for t in big:
        digest.update(t.name.encode())
        digest.update(t.raw_data)
    data_path = path.with_name(f"{path.name}.{digest.hexdigest()[:12]}.data")
    refuse_overwrite(data_path, inputs, what="external data file")
    blobs, offset = [], 0
    for t in big:
        pad = (-offset) % 4096  # aligned, as onnx's own writer does, so readers may mmap
        blobs.append(b"\0" * pad)
        offset += pad
        raw = t.raw_data
        set_external_data(t, location=data_path.name, offset=offset, length=len(raw))
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
        blobs.append(raw)
        offset += len(raw)
    existed = data_path.exists()
    atomic_write(data_path, b"".join(blobs))
    try:
        atomic_write(path, model.SerializeToString())
    except BaseException:
        if not existed:
            data_path.unlink(missing_ok=True)
        raise
    for stale in _data_files(path):
        if stale != data_path:
            stale.unlink(missing_ok=True)
    return path
