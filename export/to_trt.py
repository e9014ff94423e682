"""Build a TensorRT engine for LCoAN: weights -> ONNX -> precision graph -> strongly typed
network -> serialized engine, with a JSON sidecar and an engine cache.

    python -m export.to_trt [--onnx F | --weights W] [--fp32 | --fp16 | --int8 --calib DIR]
                            [--min 1x3x16x16 --opt 1x3x270x480 --max 1x3x540x960]
                            [--out F.engine] [--plugins liblcoan_plugins.so]
                            [--sort onnx|plugin] [--opt-level N] [--timing-cache F] [--force]

Precision lives in the graph (TensorRT 11 and TensorRT-RTX have no FP16/INT8 builder flags):
``--fp16`` builds the FP16 graph of ``export.precision`` (cluster assignment and softmax in
FP32), ``--int8`` a Q/DQ graph calibrated by ``python -m calib`` (give that graph as ``--onnx``,
or ``--calib DIR`` with LR images to calibrate here). The network is always ``STRONGLY_TYPED``.

Output names say what they hold, so the FP16 and INT8 builds never overwrite each other: from
the bundled weights ``lcoan_edge_x2_fp16.engine`` (``<weights stem>_<precision>.engine``), from
``--onnx lcoan_int8.onnx`` ``lcoan_int8.engine`` (``<graph stem>_<precision>``, a precision suffix
of the stem replaced), in the current folder; the graph it is built from is written beside it as
``<stem>_<precision>.onnx`` (e.g. ``lcoan_edge_x2_fp16.onnx``).

Each engine gets a sidecar ``<engine>.json`` (see ``export.cache``): an engine whose key
(ONNX sha256, TensorRT flavour+version, GPU or ``cpu-build``, precision, profile, plugin library) matches is reused; otherwise it is rebuilt and the change is named.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from lcoan import opspec
from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME

from . import cache
from .cache import EngineKey, Profile
from .errors import ExportError, run_cli
from .trt import (check_plugin_library, device_info, import_trt, reexec_for_rtx_plugins,
                  require_rtx_plugins_ready, trt_info)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PROFILE = ("1x3x16x16", "1x3x270x480", "1x3x540x960")
DEFAULT_WORKSPACE_MIB = 4096  # a cap, not an allocation: the 540x960 LR profile needs > 1 GiB


# --------------------------------------------------------------------------- shapes
def parse_shape(text: str | Sequence[int], what: str = "shape") -> tuple[int, ...]:
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    try:
        dims = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ExportError(f"{what} {text!r}: expected NxCxHxW, e.g. 1x3x270x480") from None
    return dims


def make_profile(min_shape, opt_shape, max_shape) -> Profile:
    """A checked min/opt/max profile: 4-D, 3 channels, positive, min <= opt <= max."""
    shapes = {}
    for name, value in (("--min", min_shape), ("--opt", opt_shape), ("--max", max_shape)):
        dims = parse_shape(value, name)
        if len(dims) != 4:
            raise ExportError(f"{name} {'x'.join(map(str, dims))}: expected 4 dimensions NxCxHxW")
        if dims[1] != 3:
            raise ExportError(f"{name} {'x'.join(map(str, dims))}: LCoAN takes 3 channels, not {dims[1]}")
        if min(dims) < 1:
            raise ExportError(f"{name} {'x'.join(map(str, dims))}: dimensions must be >= 1")
        shapes[name] = dims
    lo, opt, hi = shapes["--min"], shapes["--opt"], shapes["--max"]
    for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
        if not lo[axis] <= opt[axis] <= hi[axis]:
            raise ExportError(f"inconsistent shape profile: {label} needs min <= opt <= max, got "
                              f"{lo[axis]} / {opt[axis]} / {hi[axis]}")
    return Profile(lo, opt, hi)


# --------------------------------------------------------------------------- graph precision
def graph_precision(proto) -> str:
    import onnx
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


def has_plugin_nodes(proto) -> bool:
    return any(n.op_type == opspec.NAME for n in proto.graph.node)


def sibling(out: Path, suffix: str) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}{suffix}")


def _base(stem: str) -> str:
    return re.sub(r"[._-](fp32|fp16|int8)$", "", stem)


def graph_path(out: Path, precision: str) -> Path:
    """The ONNX graph in ``precision`` written for engine ``out``: ``<stem>_<precision>.onnx``
    (a precision suffix of the engine's stem is replaced: ``x_int8.engine`` -> ``x_fp32.onnx``)."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{_base(stem)}_{precision}.onnx")


def default_engine_path(onnx_path: str | None, weights: str | None, precision: str,
                        scale: int | None = None, sort: str = "onnx") -> Path:
    """``<graph or weights stem>_<precision>.engine`` in the current folder (never one shared name)."""
    if onnx_path:
        stem = Path(onnx_path).stem
    elif weights:
        stem = Path(weights).stem
    else:
        import lcoan
        stem = Path(lcoan.default_weights(scale or 2)).stem  # lcoan_edge_x2
    if not onnx_path and sort == "plugin":
        stem += "_plugin"  # the plugin graph's engine is another file than the standard-op one
    return Path(f"{_base(stem)}_{precision}.engine")


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
    # The one upward import: `--int8 --calib DIR` is a CLI convenience that composes the two
    # stages. Library callers pass a Q/DQ graph from `python -m calib` as --onnx instead.
    import importlib
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
        raise ExportError(str(exc)) from None
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    return out, time.perf_counter() - t0


def prepare_graph(*, onnx_path: str | None, weights: str | None, precision: str, sort: str, out: Path,
                  calib: str | None = None, calib_method: str = "minmax", calib_num: int = 32,
                  calib_tile: Sequence[int] = (64, 64), scale: int | None = None,
                  log: Callable[[str], None] = print) -> GraphSource:
    """The ONNX graph the engine is built from, in ``precision`` (written next to ``out``)."""
    import onnx

    timings: dict = {}
    if onnx_path:
        src = Path(onnx_path)
        if not src.is_file():
            raise ExportError(f"{src}: no such ONNX file")
        proto = onnx.load(str(src))
        have = graph_precision(proto)
        graph_sort = "plugin" if has_plugin_nodes(proto) else "onnx"
        if have == precision:
            return GraphSource(src, precision, graph_sort, timings)
        if have != "fp32":
            raise ExportError(f"{src} is a {have} graph; --{precision} needs an FP32 graph "
                              f"(or a {precision} one) as --onnx")
        fp32 = src
    else:
        from .to_onnx import export_onnx, load_weights
        t0 = time.perf_counter()
        model = load_weights(weights, scale)
        graph_sort = sort
        dtype = "fp16" if precision == "fp16" else "fp32"
        target = graph_path(out, dtype)
        export_onnx(model, target, sort=sort, dtype=dtype)
        timings["export_s"] = round(time.perf_counter() - t0, 3)
        if precision != "int8":
            return GraphSource(target, precision, graph_sort, timings)
        fp32 = target
    if precision == "fp16":
        from .precision import to_fp16
        t0 = time.perf_counter()
        target = graph_path(out, "fp16")
        if target.resolve() == Path(fp32).resolve():
            raise ExportError(f"{fp32}: the FP16 graph would overwrite this FP32 input; rename it or pass --out")
        onnx.save_model(to_fp16(onnx.load(str(fp32))), str(target))
        timings["fp16_s"] = round(time.perf_counter() - t0, 3)
        return GraphSource(target, precision, graph_sort, timings)
    if precision == "int8":
        if not calib:
            raise ExportError("--int8 needs calibration images (--calib DIR) or a Q/DQ graph made by "
                              "`python -m calib` as --onnx")
        if graph_path(out, "int8").resolve() == Path(fp32).resolve():
            raise ExportError(f"{fp32}: the INT8 graph would overwrite this FP32 input; rename it or pass --out")
        target, seconds = _calibrate(Path(fp32), graph_path(out, "int8"), calib, calib_method,
                                     calib_num, calib_tile, log)
        timings["calibrate_s"] = round(seconds, 3)
        return GraphSource(target, precision, graph_sort, timings)
    return GraphSource(Path(fp32), precision, graph_sort, timings)


# --------------------------------------------------------------------------- TensorRT pieces
def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that keeps every message (for one-line errors) and prints warnings."""
    severity = trt.ILogger.Severity if hasattr(trt.ILogger, "Severity") else trt.Logger.Severity

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[object, str]] = []

        def log(self, level, msg):
            self.messages.append((level, msg))
            if verbose or level in (severity.INTERNAL_ERROR, severity.ERROR):
                print(f"[TensorRT] {msg}", file=sys.stderr)

        def errors(self) -> list[str]:
            return [m for lvl, m in self.messages if lvl in (severity.INTERNAL_ERROR, severity.ERROR)]

    return Logger()


def load_plugins(trt, path: str | os.PathLike | None):
    """Register the plugin creators of a ``.so`` with TensorRT's registry; one-line errors.

    A library from ``python -m plugins.build`` built for another TensorRT major is refused before
    TensorRT sees it; one that registers itself (``*_static_*``) is simply loaded.
    """
    if not path:
        return None
    lib = Path(path)
    if not lib.is_file():
        raise ExportError(f"plugin library {lib} not found; build it with `python -m plugins.build` "
                          "on a machine with the TensorRT headers (set TENSORRT_ROOT)")
    built = check_plugin_library(trt, lib)
    registry = trt.get_plugin_registry()
    if hasattr(registry, "load_library") and (built is None or built.registration == "dynamic"):
        try:
            handle = registry.load_library(str(lib))
        except Exception as exc:  # noqa: BLE001 - bindings raise several types
            raise ExportError(f"TensorRT could not load plugin library {lib}: {exc}") from None
        if handle is None:
            raise ExportError(f"TensorRT could not load plugin library {lib} (not a TensorRT plugin "
                              "library, or built against another TensorRT)")
    else:
        import ctypes
        try:
            handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise ExportError(f"could not load plugin library {lib}: {exc}") from None
    require_rtx_plugins_ready(trt)  # before the parser creates a plugin, which would abort otherwise
    return handle


def plugin_registered(trt, name: str = opspec.NAME, version: str = opspec.VERSION,
                      namespace: str = opspec.NAMESPACE) -> bool:
    registry = trt.get_plugin_registry()
    for getter in ("get_creator", "get_plugin_creator"):
        fn = getattr(registry, getter, None)
        if fn is None:
            continue
        try:
            if fn(name, version, namespace) is not None:
                return True
        except Exception:  # noqa: BLE001
            pass
    return False


@dataclass
class NetworkInfo:
    inputs: list[str]
    outputs: list[str]
    layers: int
    layer_types: dict

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs, "layers": self.layers,
                "layer_types": self.layer_types}


def _network_info(network) -> NetworkInfo:
    from collections import Counter
    types = Counter(str(network.get_layer(i).type).split(".")[-1] for i in range(network.num_layers))
    return NetworkInfo([network.get_input(i).name for i in range(network.num_inputs)],
                       [network.get_output(i).name for i in range(network.num_outputs)],
                       network.num_layers, dict(sorted(types.items())))


def parse_network(trt, builder, logger, onnx_path: Path):
    """A STRONGLY_TYPED network parsed from ``onnx_path``; one-line error on parser failure."""
    if "STRONGLY_TYPED" not in getattr(trt.NetworkDefinitionCreationFlag, "__members__", {}):
        raise ExportError(f"TensorRT {trt.__version__} has no strongly typed networks; use TensorRT >= 10")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path)) if hasattr(parser, "parse_from_file") else \
        parser.parse(onnx_path.read_bytes())
    if not ok:
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0] if errors else None
        text = " ".join(str(first.desc() if first is not None else "unknown error").split())
        node = ""
        if first is not None:
            try:
                node = f" at node {first.node_name()!s} ({first.node_operator()!s})"
            except Exception:  # noqa: BLE001 - older parsers have no node_name
                node = f" at node {first.node()}"
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}{node}: {text[:300]}")
    return network, parser


def inspect_onnx(onnx_path: str | Path, plugins: str | None = None) -> NetworkInfo:
    """Parse ``onnx_path`` into a strongly typed network and describe it (no build)."""
    trt = import_trt()
    load_plugins(trt, plugins)
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, Path(onnx_path))
    return _network_info(network)


def default_timing_cache(info) -> Path:
    base = Path(os.environ.get("LCOAN_CACHE", Path.home() / ".cache" / "lcoan"))
    return base / f"timing-{info.flavour}-{info.version}.cache"


@dataclass
class BuildResult:
    engine: Path
    reused: bool
    reason: str
    key: EngineKey
    sidecar: dict


def engine_key(onnx_path: Path, precision: str, profile: Profile, plugins: str | None = None,
               builder: dict | None = None) -> EngineKey:
    info, device = trt_info(), device_info()
    return EngineKey(
        onnx_sha256=cache.sha256_file(onnx_path), trt=info.label, device=device.label,
        precision=precision, profile=profile.to_dict(),
        plugins_sha256=cache.sha256_file(plugins) if plugins and Path(plugins).is_file() else None,
        builder=dict(builder or {}))


def build_engine(onnx_path: str | Path, out: str | Path, *, precision: str, profile: Profile,
                 plugins: str | None = None, opt_level: int | None = None,
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB, timing_cache: str | Path | None = None,
                 force: bool = False, extra: dict | None = None, verbose: bool = False,
                 log: Callable[[str], None] = print) -> BuildResult:
    """Build (or reuse) the engine for ``onnx_path`` at ``out`` and write its sidecar."""
    trt = import_trt()
    info = trt_info(trt)
    onnx_path, out = Path(onnx_path), Path(out)
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    builder_opts = {"opt_level": opt_level, "workspace_mib": workspace_mib}
    key = engine_key(onnx_path, precision, profile, plugins, builder_opts)
    if not force:
        reuse, reason = cache.lookup(out, key)
        if reuse:
            log(f"reusing {out}: {reason}")
            return BuildResult(out, True, reason, key, cache.read_sidecar(out) or {})
        if out.exists():
            log(f"rebuilding {out}: {reason}")
    else:
        reason = "forced"

    t_all = time.perf_counter()
    load_plugins(trt, plugins)
    import onnx
    if has_plugin_nodes(onnx.load(str(onnx_path), load_external_data=False)) and not plugin_registered(trt):
        raise ExportError(f"{onnx_path} uses the {opspec.NAME} plugin; pass --plugins liblcoan_plugins.so "
                          "(or build the --sort onnx graph)")
    logger = make_logger(trt, verbose)
    builder = trt.Builder(logger)
    t0 = time.perf_counter()
    network, _parser = parse_network(trt, builder, logger, onnx_path)
    parse_s = time.perf_counter() - t0
    net = _network_info(network)
    if net.inputs != [INPUT_NAME] or net.outputs != [OUTPUT_NAME]:
        raise ExportError(f"{onnx_path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                          f"got {net.inputs} -> {net.outputs}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if opt_level is not None and info.optimization_level:
        config.builder_optimization_level = int(opt_level)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)

    cache_path = None
    if info.timing_cache:  # TensorRT-RTX: deprecated no-ops, so not used there
        cache_path = Path(timing_cache) if timing_cache else default_timing_cache(info)
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        tc = config.create_timing_cache(blob)
        if not config.set_timing_cache(tc, False) and blob:  # from another GPU/version: start afresh
            log(f"timing cache {cache_path} does not fit this GPU/TensorRT; starting a new one")
            config.set_timing_cache(config.create_timing_cache(b""), False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        errors = logger.errors()
        detail = " ".join(errors[-1].split())[:300] if errors else "see the TensorRT log (--verbose)"
        raise ExportError(f"TensorRT could not build {onnx_path} ({precision}, profile "
                          f"{profile.label()}): {detail}")
    data = bytes(memoryview(serialized))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))

    sidecar = {
        "onnx": str(onnx_path), "onnx_sha256": key.onnx_sha256,
        "tensorrt": info.to_dict(), "device": device_info().to_dict() | {"label": key.device},
        "precision": precision, "profile": profile.to_dict(),
        "plugins": str(plugins) if plugins else None,
        "network": net.to_dict(), "engine_bytes": len(data), "engine_sha256": cache.sha256_bytes(data),
        "timing_cache": str(cache_path) if cache_path else None,
        "timings": {"parse_s": round(parse_s, 3), "build_s": round(build_s, 3),
                    "total_s": round(time.perf_counter() - t_all, 3)},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extra:
        for k, v in extra.items():
            sidecar[k] = sidecar[k] | v if isinstance(v, dict) and isinstance(sidecar.get(k), dict) else v
    cache.write_sidecar(out, key, **sidecar)
    return BuildResult(out, False, reason, key, cache.read_sidecar(out) or {})


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from lcoan.cli import ArgumentParser
    parser = ArgumentParser(prog="python -m export.to_trt", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--onnx", help="ONNX graph: FP32 (converted to the chosen precision), or already "
                     "FP16 / Q/DQ INT8 (default: export the weights)")
    from lcoan.cli import WEIGHTS_HELP
    src.add_argument("--weights", metavar="NAME|FILE", help=WEIGHTS_HELP)
    prec = parser.add_mutually_exclusive_group()
    for p, what in (("fp32", "FP32 graph"), ("fp16", "FP16 graph, cluster assignment and softmax in FP32 "
                                                     "(the default)"),
                    ("int8", "Q/DQ INT8 graph: --onnx from `python -m calib`, or --calib DIR")):
        prec.add_argument(f"--{p}", dest="precision", action="store_const", const=p, help=what)
    parser.add_argument("--calib", metavar="DIR", help="folder of LR calibration images for --int8 (default: none)")
    parser.add_argument("--calib-method", default="minmax", choices=("entropy", "percentile", "minmax"),
                        help="calibration method for --calib (default: %(default)s)")
    parser.add_argument("--calib-num", type=int, default=32, help="calibration tiles (default: %(default)s)")
    parser.add_argument("--calib-tile", default="64x64", metavar="HxW",
                        help="calibration tile in LR pixels (default: %(default)s)")
    for flag, value, what in (("--min", DEFAULT_PROFILE[0], "smallest"), ("--opt", DEFAULT_PROFILE[1], "tuned-for"),
                              ("--max", DEFAULT_PROFILE[2], "largest")):
        parser.add_argument(flag, default=value, metavar="NxCxHxW",
                            help=f"{what} LR input of the shape profile, batch x 3 x height x width "
                                 f"(default: %(default)s)")
    parser.add_argument("--out", metavar="F.engine",
                        help="engine file; its graph and .json sidecar go beside it (default: "
                             "<weights or --onnx stem>[_plugin]_<precision>.engine, e.g. lcoan_edge_x2_fp16.engine)")
    parser.add_argument("--plugins", metavar="LIB.so",
                        help="TensorRT plugin library for --sort plugin graphs (default: none)")
    parser.add_argument("--sort", choices=("onnx", "plugin"), default="onnx",
                        help="sort form when exporting from weights: standard ops or the LCoAClusterSort "
                             "plugin node (default: %(default)s)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=None,
                        help="expected scale; an error if the weights are for another (default: the weights')")
    parser.add_argument("--opt-level", type=int, default=None,
                        help="builder optimization level 0-5 (default: TensorRT's)")
    parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB",
                        help="workspace pool limit in MiB (default: %(default)s)")
    parser.add_argument("--timing-cache", metavar="F",
                        help="timing cache file (default: ~/.cache/lcoan/timing-<flavour>-<version>.cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache key matches")
    parser.add_argument("--verbose", action="store_true", help="print TensorRT's log")
    args = parser.parse_args(argv)

    precision = args.precision or "fp16"
    profile = make_profile(args.min, args.opt, args.max)
    if args.plugins and not Path(args.plugins).is_file():
        raise ExportError(f"plugin library {args.plugins} not found; build it with `python -m plugins.build` "
                          "on a machine with the TensorRT headers (set TENSORRT_ROOT)")
    if args.calib and precision != "int8":
        raise ExportError("--calib is for --int8 builds")
    info = trt_info()  # fail early, before exporting, when TensorRT is missing
    if args.plugins:
        check_plugin_library(import_trt(), args.plugins)  # before any work, and before a restart
        if argv is None:  # a command line, not a library call: safe to restart
            reexec_for_rtx_plugins()
    out = Path(args.out) if args.out else default_engine_path(args.onnx, args.weights, precision, args.scale,
                                                                         args.sort)
    tile = parse_shape(args.calib_tile, "--calib-tile")
    if len(tile) != 2:
        raise ExportError(f"--calib-tile {args.calib_tile!r}: expected HxW")
    source = prepare_graph(onnx_path=args.onnx, weights=args.weights, precision=precision, sort=args.sort,
                           out=out, calib=args.calib, calib_method=args.calib_method,
                           calib_num=args.calib_num, calib_tile=tile, scale=args.scale)
    result = build_engine(source.path, out, precision=precision, profile=profile, plugins=args.plugins,
                          opt_level=args.opt_level, workspace_mib=args.workspace,
                          timing_cache=args.timing_cache, force=args.force, verbose=args.verbose,
                          extra={"sort": source.sort, "timings": source.timings})
    if not result.reused:
        side = result.sidecar
        t = side.get("timings", {})
        net = side.get("network", {})
        print(f"wrote {out} ({precision}, {info.label}, {result.key.device}, profile {profile.label()}, "
              f"{net.get('layers')} layers, build {t.get('build_s')} s, {side.get('engine_bytes')} bytes)")
    made = [str(out), str(cache.sidecar_path(out))]
    if source.path.resolve() != Path(args.onnx or "").resolve():
        made.insert(0, str(source.path))
    print(f"done ({'engine reused' if result.reused else 'engine built'}): {', '.join(made)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
