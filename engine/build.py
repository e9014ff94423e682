"""ONNX graph -> TensorRT engine: a strongly typed network, one optimisation profile, the
serialized engine written atomically with its sidecar (``engine.cache``), reused when its key
matches. The one place that registers plugin libraries with TensorRT (:func:`load_plugins`).

    from engine.build import build_engine, make_profile
    build_engine("lcoan_edge_x2_fp16.onnx", "lcoan_edge_x2_fp16.engine", precision="fp16",
                 profile=make_profile("1x3x16x16", "1x3x270x480", "1x3x540x960"))

Precision lives in the graph (TensorRT 11 and TensorRT-RTX have no FP16/INT8 builder flags), so
this module only builds: making the FP16 or Q/DQ graph is ``export`` and ``calib``'s work, and
the command that chains them is ``python -m export.to_trt`` (``pipeline.to_trt``).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lcoan import opspec
from lcoan.graph_io import GraphIO, load_onnx, read_io

from . import cache
from .cache import EngineKey, Profile
from .errors import EngineError
from .trt import check_plugin_library, device_info, import_trt, require_rtx_plugins_ready, trt_info

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
        raise EngineError(f"{what} {text!r}: expected NxCxHxW, e.g. 1x3x270x480") from None
    return dims


def make_profile(min_shape, opt_shape, max_shape) -> Profile:
    """A checked min/opt/max profile: 4-D, 3 channels, positive, min <= opt <= max."""
    shapes = {}
    for name, value in (("--min", min_shape), ("--opt", opt_shape), ("--max", max_shape)):
        dims = parse_shape(value, name)
        if len(dims) != 4:
            raise EngineError(f"{name} {'x'.join(map(str, dims))}: expected 4 dimensions NxCxHxW")
        if dims[1] != 3:
            raise EngineError(f"{name} {'x'.join(map(str, dims))}: LCoAN takes 3 channels, not {dims[1]}")
        if min(dims) < 1:
            raise EngineError(f"{name} {'x'.join(map(str, dims))}: dimensions must be >= 1")
        shapes[name] = dims
    lo, opt, hi = shapes["--min"], shapes["--opt"], shapes["--max"]
    for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
        if not lo[axis] <= opt[axis] <= hi[axis]:
            raise EngineError(f"inconsistent shape profile: {label} needs min <= opt <= max, got "
                              f"{lo[axis]} / {opt[axis]} / {hi[axis]}")
    return Profile(lo, opt, hi)


def io_profile(spec: GraphIO, profile: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Input name -> (min, opt, max) shapes of a graph with I/O ``spec`` for an LR ``profile``
    (N x 3 x H x W): rgb8 takes (N, H, W, 3), i420 (N, H, W) and twice (N, H/2, W/2)."""
    shapes: dict[str, list] = {name: [] for name in spec.inputs}
    for label, dims in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        n, _, h, w = dims
        try:
            spec.check_size(h, w, f"--{label} {'x'.join(map(str, dims))}")
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        for name, shape in spec.input_shapes(n, h, w).items():
            shapes[name].append(tuple(shape))
    return {name: tuple(v) for name, v in shapes.items()}


def has_plugin_nodes(proto) -> bool:
    return any(n.op_type == opspec.NAME for n in proto.graph.node)



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
        raise EngineError(f"plugin library {lib} not found; build it with `python -m plugins.build` "
                          "on a machine with the TensorRT headers (set TENSORRT_ROOT)")
    built = check_plugin_library(trt, lib)
    registry = trt.get_plugin_registry()
    if hasattr(registry, "load_library") and (built is None or built.registration == "dynamic"):
        try:
            handle = registry.load_library(str(lib))
        except Exception as exc:  # noqa: BLE001 - bindings raise several types
            raise EngineError(f"TensorRT could not load plugin library {lib}: {exc}") from None
        if handle is None:
            raise EngineError(f"TensorRT could not load plugin library {lib} (not a TensorRT plugin "
                              "library, or built against another TensorRT)")
    else:
        import ctypes
        try:
            handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise EngineError(f"could not load plugin library {lib}: {exc}") from None
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
        raise EngineError(f"TensorRT {trt.__version__} has no strongly typed networks; use TensorRT >= 10")
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
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}{node}: {text[:300]}")
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
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
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
    proto = load_onnx(onnx_path, external_data=False)
    try:
        spec = read_io(proto, str(onnx_path))
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    shapes = io_profile(spec, profile)  # odd i420 profiles are refused before the parse
    if has_plugin_nodes(proto) and not plugin_registered(trt):
        raise EngineError(f"{onnx_path} uses the {opspec.NAME} plugin; pass --plugins liblcoan_plugins.so "
                          "(or build the --sort onnx graph)")
    logger = make_logger(trt, verbose)
    builder = trt.Builder(logger)
    t0 = time.perf_counter()
    network, _parser = parse_network(trt, builder, logger, onnx_path)
    parse_s = time.perf_counter() - t0
    net = _network_info(network)
    if tuple(net.inputs) != spec.inputs or tuple(net.outputs) != spec.outputs:
        raise EngineError(f"{onnx_path}: a {spec.mode} graph has inputs {list(spec.inputs)} and outputs "
                          f"{list(spec.outputs)}, got {net.inputs} -> {net.outputs}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if opt_level is not None and info.optimization_level:
        config.builder_optimization_level = int(opt_level)
    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        trt_profile.set_shape(name, lo, opt, hi)
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
        raise EngineError(f"TensorRT could not build {onnx_path} ({precision}, profile "
                          f"{profile.label()}): {detail}")
    data = bytes(memoryview(serialized))
    from lcoan.safeio import atomic_write
    atomic_write(out, data)  # then its sidecar: a kill between them leaves a sha256 mismatch, rebuilt
    if cache_path is not None:  # shared by every build: a reader never sees half of it
        atomic_write(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    sidecar = {
        "onnx": str(onnx_path), "onnx_sha256": key.onnx_sha256,
        "tensorrt": info.to_dict(), "device": device_info().to_dict() | {"label": key.device},
        "precision": precision, "profile": profile.to_dict(),
        "plugins": str(plugins) if plugins else None,
        "network": net.to_dict(), "engine_bytes": len(data), "engine_sha256": cache.sha256_bytes(data),
        # how to feed the engine (lcoan.graph_io.GraphIO): the colours of an i420 engine live only here
        "io": {"mode": spec.mode, "inputs": list(spec.inputs), "outputs": list(spec.outputs),
               "colorspace": spec.colorspace, "range": spec.range, "scale": spec.scale},
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
