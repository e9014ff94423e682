"""INT8 Q/DQ graphs for TensorRT from an FP32 LCoAN graph, calibrated on LR images.

Only ``Conv`` is quantised (per-channel symmetric INT8 weights, per-tensor symmetric INT8
activations, FP32 bias): the cluster assignment (the MatMul with the frozen centroids and the
ArgMax), the attention scores, ReduceLogSumExp / Exp, the attention MatMuls and the sort never
see a Q/DQ pair. ``QuantizeBias`` is off because TensorRT rejects the int32 bias
DequantizeLinear that ONNX Runtime writes otherwise.

Calibration tiles are what the model sees at inference: LR images (e.g. Set14 ``LR_bicubic``),
or HR images downscaled with the MATLAB-compatible ``imresize`` (``downscale=2`` for T91),
cropped to a fixed tile on a regular grid.

Integer-I/O graphs (``export.to_onnx --io rgb8|i420``) calibrate the same way: each tile is fed as
the graph takes it (8-bit RGB NHWC, or I420 planes in the graph's colour space; tiles are cropped
to even sizes for 4:2:0), and the conversions around the network, which hold no Conv, stay FP32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx

from lcoan import opspec
from lcoan.graph_io import GraphIO, load_onnx, read_io, read_metadata, save_onnx, write_metadata
from lcoan.errors import LcoanError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
METHODS = ("entropy", "percentile", "minmax")
DEFAULT_METHOD = "minmax"
DEFAULT_TILE = (64, 64)
DEFAULT_NUM = 32
QUANTIZED_OPS = ("Conv",)
EXTRA_OPTIONS = {"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True}


class CalibrationError(LcoanError, ValueError):
    """A problem with the calibration inputs; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- images
def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no such image folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise CalibrationError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def load_lr(path: Path, downscale: int | None = None) -> np.ndarray:
    """float32 ``[3, h, w]`` in [0, 1]: the file itself, or the file bicubic-downscaled."""
    from lcoan.data import imresize, read_image_levels
    levels = read_image_levels(path)
    if levels.dtype != np.uint8:
        levels = np.clip(np.round(levels.astype(np.float64) / (65535.0 if levels.dtype == np.uint16 else 1.0) * 255),
                         0, 255).astype(np.uint8)
    if downscale and downscale > 1:
        h, w = levels.shape[:2]
        levels = levels[: h - h % downscale, : w - w % downscale]
        levels = imresize(levels, 1.0 / downscale)
    return (levels.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()


def _grid_crops(image: np.ndarray, tile: tuple[int, int], count: int) -> list[np.ndarray]:
    """Up to ``count`` tiles on a regular grid spread over the image (the image itself if smaller)."""
    _, h, w = image.shape
    th, tw = min(tile[0], h), min(tile[1], w)
    rows = max(1, min(h // th, int(np.ceil(np.sqrt(count)))))
    cols = max(1, min(w // tw, int(np.ceil(count / rows))))
    ys = np.linspace(0, h - th, rows).round().astype(int)
    xs = np.linspace(0, w - tw, cols).round().astype(int)
    crops = [image[:, y:y + th, x:x + tw] for y in ys for x in xs]
    return crops[:count]


def calibration_tiles(images: str | Path, num: int = DEFAULT_NUM, tile: Sequence[int] = DEFAULT_TILE,
                      downscale: int | None = None, problems: list | None = None) -> list[np.ndarray]:
    """``num`` float32 ``[1, 3, th, tw]`` tiles, spread evenly over the images of ``images``.

    An unreadable image raises :class:`CalibrationError` naming it; with a ``problems`` list it is
    skipped instead (``(path, reason)`` appended) and the tiles come from the other images.
    """
    if num < 1:
        raise CalibrationError(f"--num must be >= 1, got {num}")
    tile = (int(tile[0]), int(tile[1]))
    if min(tile) < 8:
        raise CalibrationError(f"tile {tile[0]}x{tile[1]} is too small (>= 8x8)")
    from lcoan.data import ImageReadError
    loaded = []
    for path in list_images(images):
        try:
            loaded.append(load_lr(path, downscale))
        except (ImageReadError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or " ".join(str(exc).split())
            if problems is None:
                raise CalibrationError(f"{path}: unreadable image ({reason})") from None
            problems.append((path, reason))
    if not loaded:
        raise CalibrationError(f"{images}: none of the images could be read")
    per_image = [num // len(loaded) + (1 if i < num % len(loaded) else 0) for i in range(len(loaded))]
    tiles = []
    for image, count in zip(loaded, per_image):
        if count == 0:
            continue
        tiles += [np.ascontiguousarray(c[None], dtype=np.float32) for c in _grid_crops(image, tile, count)]
    return tiles


def images_digest(images: str | Path, num: int, tile: Sequence[int], downscale: int | None) -> str:
    """A hash of the calibration set (file names and contents, tile, count)."""
    h = hashlib.sha256(json.dumps([num, list(tile), downscale]).encode())
    for path in list_images(images):
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


class TileReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a list of float RGB tiles, fed
    as the graph's inputs (``io``: float by default; rgb8 and i420 graphs get uint8 frames)."""

    def __init__(self, tiles: Sequence[np.ndarray], io: GraphIO | None = None):
        from lcoan.graph_io import io_for
        self.tiles, self.io, self._i = list(tiles), io or io_for("float"), 0

    def get_next(self):
        if self._i >= len(self.tiles):
            return None
        self._i += 1
        from export.integer_io import even, frames_from_rgb
        tile = self.tiles[self._i - 1]
        return frames_from_rgb(self.io, even(tile) if self.io.mode == "i420" else tile)

    def rewind(self):
        self._i = 0

    def __len__(self):
        return len(self.tiles)

    def __iter__(self):
        self.rewind()
        return iter(lambda: self.get_next(), None)

    def set_range(self, start_index: int, end_index: int):  # for CalibStridedMinMax
        self.tiles = self.tiles[start_index:end_index]
        self._i = 0


# --------------------------------------------------------------------------- graph helpers
def has_plugin(proto: onnx.ModelProto) -> bool:
    return any(n.op_type == opspec.NAME for n in proto.graph.node)


def is_qdq(proto: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def quantizable_nodes(proto: onnx.ModelProto, ops: Iterable[str] = QUANTIZED_OPS) -> list[str]:
    ops = set(ops)
    return [n.name for n in proto.graph.node if n.op_type in ops]


def kept_out_nodes(proto: onnx.ModelProto) -> list[str]:
    """Nodes that must stay floating point: cluster assignment, attention, sort (documentation)."""
    keep = []
    for n in proto.graph.node:
        if "/kmeans/" in n.name or "sort_fn/" in n.name or n.op_type in (
                "ArgMax", "MatMul", "ReduceLogSumExp", "Softmax", "Exp", opspec.NAME):
            keep.append(n.name)
    return keep


@contextlib.contextmanager
def _plugin_sessions():
    """Let ONNX Runtime's calibrator run graphs with the ``LCoAClusterSort`` node.

    The calibrator builds its own ``InferenceSession`` from plain ``SessionOptions``; inside this
    block those options register onnxruntime-extensions, whose ``ai.onnx.contrib`` domain carries
    the CPU op of ``export.ort_ops`` (the graph's plugin nodes are moved to that domain for the
    duration and moved back afterwards).
    """
    import onnxruntime
    from onnxruntime.quantization import calibrate
    from onnxruntime_extensions import get_library_path

    from export import ort_ops
    ort_ops.register()
    real = onnxruntime.SessionOptions

    class _Options(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.register_custom_ops_library(get_library_path())

    class _Proxy:
        def __getattr__(self, name):
            return _Options if name == "SessionOptions" else getattr(onnxruntime, name)

    saved = calibrate.onnxruntime
    calibrate.onnxruntime = _Proxy()
    try:
        yield
    finally:
        calibrate.onnxruntime = saved


def _to_trt_domain(proto: onnx.ModelProto) -> onnx.ModelProto:
    from export.ort_ops import CONTRIB_DOMAIN
    for node in proto.graph.node:
        if node.op_type == opspec.NAME and node.domain == CONTRIB_DOMAIN:
            node.domain = opspec.DOMAIN
    kept = [o for o in proto.opset_import if o.domain != CONTRIB_DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    if not any(o.domain == opspec.DOMAIN for o in kept):
        proto.opset_import.append(onnx.helper.make_opsetid(opspec.DOMAIN, opspec.DOMAIN_OPSET))
    return proto


# --------------------------------------------------------------------------- quantisation
@dataclass
class QuantizeResult:
    path: Path
    method: str
    tiles: int
    tile: tuple[int, int]
    quantized: list[str]
    excluded: list[str]
    calibrate_s: float
    metadata: dict = field(default_factory=dict)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod
    table = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
             "minmax": CalibrationMethod.MinMax}
    if name not in table:
        raise CalibrationError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}")
    return table[name]


# Convs kept out of INT8 by default: the ones next to the image (head, upsampler, tail), the
# matching conv whose output is clustered (its rounding flips cluster ids), and the body's last
# conv, whose output is added to the shallow features (the first that --sensitivity ranks for
# realtime_x2). Y-PSNR loss against FP32 on Set5 + Set14 (goal <= 0.10 dB): edge_x2, every Conv
# 0.114 dB, without body_conv 0.058, with it 0.051; realtime_x2, without body_conv 0.112, with it
# 0.083 (docs/benchmarks.md, INT8).
SENSITIVE_CONV_PATTERNS = ("/head/", "/attention/match_conv/", "/body_conv/", "/upsampler/", "/tail_conv/")


def default_exclusions(onnx_in: str | Path | onnx.ModelProto) -> list[str]:
    proto = onnx_in if isinstance(onnx_in, onnx.ModelProto) else load_onnx(onnx_in, external_data=False)
    return [n.name for n in proto.graph.node
            if n.op_type == "Conv" and any(p in n.name for p in SENSITIVE_CONV_PATTERNS)]


def quantize(onnx_in: str | Path | onnx.ModelProto, out: str | Path, images: str | Path | None = None, *,
             method: str = DEFAULT_METHOD, num: int = DEFAULT_NUM, tile: Sequence[int] = DEFAULT_TILE,
             downscale: int | None = None, exclude: Iterable[str] = (),
             tiles: Sequence[np.ndarray] | None = None, cache: str | Path | None = None) -> QuantizeResult:
    """Write a Q/DQ INT8 graph of ``onnx_in`` to ``out``.

    ``images``: a folder of LR images (or HR images with ``downscale``); ``tiles``: ready tiles
    instead. ``exclude``: Conv node names to keep in floating point. ``cache``: a calibration
    cache file (tensor ranges); with it, re-quantising with other exclusions skips calibration.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from export.to_onnx import check_finite_graph
    from lcoan.safeio import refuse_overwrite
    from lcoan.safeio import check_writable
    sources = [p for p in (onnx_in, images, cache) if p is not None and not isinstance(p, onnx.ModelProto)]
    refuse_overwrite(out, sources, what="INT8 graph")
    check_writable(out, what="INT8 graph")
    proto = onnx_in if isinstance(onnx_in, onnx.ModelProto) else load_onnx(onnx_in)
    try:
        io = read_io(proto, str(onnx_in) if not isinstance(onnx_in, onnx.ModelProto) else "graph")
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    check_finite_graph(proto, onnx_in if not isinstance(onnx_in, onnx.ModelProto) else "graph")
    if is_qdq(proto):
        raise CalibrationError("the input graph already has QuantizeLinear/DequantizeLinear nodes")
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        raise CalibrationError("the input graph is FP16; calibrate the FP32 graph (export --precision fp32)")
    exclude = list(exclude)
    unknown = sorted(set(exclude) - {n.name for n in proto.graph.node})
    if unknown:
        raise CalibrationError(f"no node named {unknown[0]!r} to exclude")
    if tiles is None:
        if images is None and not (cache and Path(cache).is_file()):
            raise CalibrationError("pass calibration images (--images DIR)")
        tiles = calibration_tiles(images, num, tile, downscale) if images is not None else []
    reader = TileReader(tiles, io) if tiles else None
    plugin = has_plugin(proto)
    if plugin:
        from export.ort_ops import for_ort
        proto = for_ort(proto)
    out = Path(out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lcoan-calib-") as tmp, \
            (_plugin_sessions() if plugin else contextlib.nullcontext()):
        src, staged = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(proto, str(src))
        quantize_static(
            str(src), str(staged), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=_method(method), op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=exclude, extra_options=dict(EXTRA_OPTIONS),
            calibration_cache_path=str(cache) if cache else None)
        elapsed = time.perf_counter() - t0
        result = load_onnx(staged)
    if plugin:
        result = _to_trt_domain(result)
    quantized = [n for n in quantizable_nodes(proto) if n not in exclude]
    shapes = sorted({tuple(t.shape[2:]) for t in tiles}) if tiles else []
    calib = {"method": method, "tiles": len(tiles) if tiles else 0, "tile_shapes": [list(s) for s in shapes],
             "quantized_ops": list(QUANTIZED_OPS), "excluded": exclude, "downscale": downscale}
    try:
        graph_meta = dataclasses.replace(read_metadata(proto), dtype="int8", calib=calib)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    write_metadata(result, graph_meta)
    meta = graph_meta.to_props()
    onnx.checker.check_model(result)
    save_onnx(result, out, inputs=sources)  # atomic: a failed run never leaves half a graph at --out
    return QuantizeResult(out, method, len(tiles) if tiles else 0, tuple(tile), quantized, exclude, elapsed, meta)


def qdq_counts(proto: onnx.ModelProto) -> dict[str, int]:
    from collections import Counter
    c = Counter(n.op_type for n in proto.graph.node)
    return {"QuantizeLinear": c["QuantizeLinear"], "DequantizeLinear": c["DequantizeLinear"],
            "Conv": c["Conv"]}


def quantized_consumers(proto: onnx.ModelProto) -> list[str]:
    """Nodes that read a DequantizeLinear output (which ops actually run in INT8)."""
    dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type != "QuantizeLinear" and any(i in dq for i in n.input)]


# --------------------------------------------------------------------------- evaluation
@dataclass
class DriftReport:
    """INT8 vs FP32 graph on benchmark images (both through ONNX Runtime CPU)."""
    images: list[dict]
    mean_fp32_psnr_y: float
    mean_int8_psnr_y: float
    psnr_loss_db: float            # mean FP32 Y-PSNR - mean INT8 Y-PSNR
    cluster_flip_fraction: float   # positions whose cluster id differs under INT8
    positions: int

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)


def _with_cluster_ids(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    from export.graph import add_outputs, cluster_id_tensors
    names = cluster_id_tensors(proto)
    return add_outputs(proto, names), names


def evaluate(fp32: str | Path | onnx.ModelProto, int8: str | Path | onnx.ModelProto, samples,
             scale: int, threads: int | None = None) -> DriftReport:
    """Y-PSNR of both graphs against HR and the cluster-id flip fraction, per image.

    ``samples``: ``export.samples.Sample`` objects (LR ``[1, 3, h, w]`` float32 and HR).
    """
    import torch
    from export import ort_ops
    from lcoan.metrics import psnr_y

    from export.integer_io import even, frames_from_rgb, rgb_from_frames

    def load(m):
        return m if isinstance(m, onnx.ModelProto) else load_onnx(m)

    ref_proto, cand_proto = load(fp32), load(int8)
    io, io_q = read_io(ref_proto), read_io(cand_proto)
    ref_proto, ids = _with_cluster_ids(ref_proto)
    cand_proto, ids_q = _with_cluster_ids(cand_proto)
    if ids != ids_q:
        raise CalibrationError("the INT8 graph's cluster-assignment outputs differ from the FP32 graph's")
    if io != io_q:
        raise CalibrationError(f"the FP32 graph is {io.describe()}, the INT8 graph {io_q.describe()}")
    ref = ort_ops.session(ref_proto, threads=threads)
    cand = ort_ops.session(cand_proto, threads=threads)
    outputs = list(io.outputs) + ids
    k = len(io.outputs)
    rows, flips, total = [], 0, 0
    for s in samples:
        lr = even(s.lr) if io.mode == "i420" else s.lr   # 4:2:0: even sizes (one row/column dropped)
        feed = frames_from_rgb(io, lr)
        r = ref.run(outputs, feed)
        c = cand.run(outputs, feed)
        f = sum(int(np.count_nonzero(a != b)) for a, b in zip(r[k:], c[k:]))
        n = sum(int(a.size) for a in r[k:])
        flips, total = flips + f, total + n
        row = {"name": s.name, "lr_shape": list(lr.shape), "cluster_flips": f, "positions": n}
        sr_ref, sr_cand = rgb_from_frames(io, r[:k]), rgb_from_frames(io, c[:k])
        hr = None if s.hr is None else s.hr[..., :sr_ref.shape[-2], :sr_ref.shape[-1]]
        if hr is not None and hr.shape == sr_ref.shape:
            hr = torch.from_numpy(np.ascontiguousarray(hr))
            row["fp32_psnr_y"] = float(psnr_y(torch.from_numpy(sr_ref), hr, scale))
            row["int8_psnr_y"] = float(psnr_y(torch.from_numpy(sr_cand), hr, scale))
        rows.append(row)
    scored = [r for r in rows if "fp32_psnr_y" in r]
    mean32 = float(np.mean([r["fp32_psnr_y"] for r in scored])) if scored else float("nan")
    mean8 = float(np.mean([r["int8_psnr_y"] for r in scored])) if scored else float("nan")
    return DriftReport(rows, mean32, mean8, mean32 - mean8, flips / max(total, 1), total)


def sensitivity(fp32: str | Path, samples, scale: int, cache: str | Path, tiles=None, *, nodes=None,
                method: str = DEFAULT_METHOD, workdir: str | Path | None = None,
                threads: int | None = None, on_variant=None) -> list[dict]:
    """Per Conv: the Y-PSNR loss when only that Conv stays FP32 (all others INT8).

    ``on_variant(name)`` is called after each variant is scored (progress bars).

    Calibration runs once (``cache`` keeps the tensor ranges); each variant only re-quantises.
    Sorted by the gain of keeping the layer in FP32, best first.
    """
    proto = load_onnx(fp32)
    convs = list(nodes) if nodes else quantizable_nodes(proto)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="lcoan-sens-"))
    base_path = workdir / "all.onnx"
    quantize(proto, base_path, tiles=tiles, method=method, cache=cache)
    base = evaluate(proto, base_path, samples, scale, threads).psnr_loss_db
    if on_variant:
        on_variant("(none excluded)")
    rows = []
    for i, name in enumerate(convs):
        path = workdir / f"ex{i}.onnx"
        quantize(proto, path, tiles=None, method=method, cache=cache, exclude=[name])
        loss = evaluate(proto, path, samples, scale, threads).psnr_loss_db
        rows.append({"node": name, "loss_db": loss, "gain_db": base - loss})
        if on_variant:
            on_variant(name)
    rows.sort(key=lambda r: -r["gain_db"])
    return [{"node": "(none excluded)", "loss_db": base, "gain_db": 0.0}] + rows
