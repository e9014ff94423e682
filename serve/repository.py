"""A Triton Inference Server model repository for LCoAN.

    from serve.repository import write_repository
    repo = write_repository("triton_repo")     # bundled weights, FP16 engine, batch 8

writes (atomically: a staging folder renamed into place)::

    triton_repo/
      README.md                    the tritonserver command for each config; the TensorRT rule
      lcoan/
        config.pbtxt               production: platform tensorrt_plan, dims [3, -1, -1],
                                   max_batch_size = the engine profile's max batch, GPU instances,
                                   dynamic batching of equal-size tiles, parameters lcoan_io
                                   (and lcoan_colorspace, lcoan_range for I420 graphs)
        configs/cpu.pbtxt          CPU: Python backend running 1/model.onnx through ONNX Runtime
                                   (selected with --model-config-name=cpu)
        1/model.plan               the engine (python -m export.to_trt), 1/model.plan.json its sidecar
        1/model.onnx, 1/model.py   the FP32 graph (counting sort) and the Python-backend model
        plugins/liblcoan_plugins_static_trt<major>.so   --sort plugin engines only

Triton's TensorRT backend loads plugin libraries with ``dlopen`` (``LD_PRELOAD`` or
``--backend-config=tensorrt,plugins=...``) and never calls ``getCreators``, so the library copied
here must be the self-registering one (``liblcoan_plugins_static_trt<major>.so``, built against the
serving TensorRT's major); :func:`plugin_registration` reads its ELF dynamic symbols, and the build
line that ``plugins.build`` embeds, to make sure.

An engine runs only under the TensorRT (version and flavour) that built it: a plan built here by
TensorRT-RTX is a build check, and the serving container's TensorRT must rebuild it there.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from lcoan.graph_io import GraphIO, load_onnx, read_io

from .errors import ServeError

MODEL_NAME = "lcoan"
DEFAULT_MAX_BATCH = 8
DEFAULT_MIN_HW = (16, 16)
DEFAULT_OPT_HW = (96, 96)      # the app's default Triton tile: 64 LR pixels + 2 x 16 overlap
DEFAULT_MAX_HW = (256, 256)    # 65,536 positions: the counting sort's largest tested size
DEFAULT_QUEUE_DELAY_US = 2000
STATIC_PLUGIN_LIB = "liblcoan_plugins_static_trt<major>.so"
MODEL_PY = Path(__file__).with_name("model_python.py")

# TensorRT DataType / ONNX TensorProto names -> Triton config data types.
TRT_TO_TRITON = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "BF16": "TYPE_BF16", "INT8": "TYPE_INT8",
                 "UINT8": "TYPE_UINT8", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "BOOL": "TYPE_BOOL"}
ONNX_TO_TRITON = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16", "INT8": "TYPE_INT8",
                  "UINT8": "TYPE_UINT8", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "BOOL": "TYPE_BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it: ``dims`` include the batch dimension (-1)."""
    name: str
    data_type: str          # Triton's TYPE_*
    dims: tuple[int, ...]

    def config_dims(self) -> list[int]:
        return list(self.dims[1:])  # max_batch_size > 0: Triton adds the batch dimension itself


@dataclass
class Repository:
    root: Path
    model_dir: Path
    plan: Path
    onnx: Path
    plugin: Path | None
    trt_label: str
    precision: str
    profile: dict
    max_batch: int
    io: dict = field(default_factory=dict)

    @property
    def production_config(self) -> Path:
        return self.model_dir / "config.pbtxt"

    @property
    def cpu_config(self) -> Path:
        return self.model_dir / "configs" / "cpu.pbtxt"


# --------------------------------------------------------------------------- configs
def _io_block(kind: str, spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.config_dims())
    return f'{kind} [\n  {{\n    name: "{spec.name}"\n    data_type: {spec.data_type}\n    dims: [ {dims} ]\n  }}\n]\n'


def _batching_block(dynamic: bool, queue_delay_us: int) -> str:
    if not dynamic:
        return ""
    # No preferred sizes: the batcher takes whatever equal-shape requests arrived within the delay,
    # up to max_batch_size. Requests of different H x W are never batched together, so clients send
    # fixed-size tiles.
    return f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(queue_delay_us)}\n}}\n"


def graph_parameters(spec: GraphIO) -> dict[str, str]:
    """What a client must know of the graph's I/O beyond names and types, as config parameters:
    ``lcoan_io`` and, for I420, ``lcoan_colorspace`` and ``lcoan_range`` (the app's Triton backend
    reads them to match the stream's colour tags; the graph's own metadata is not visible to it)."""
    params = {"lcoan_io": spec.mode}
    if spec.mode == "i420":
        params |= {"lcoan_colorspace": spec.colorspace, "lcoan_range": spec.range}
    return params


def _parameters_block(params: dict[str, str]) -> str:
    return "".join(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}\n'
                   for k, v in params.items())


def production_config(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *, max_batch: int,
                      instances: int = 1, dynamic_batching: bool = True,
                      queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, header: str = "",
                      name: str = MODEL_NAME, parameters: dict[str, str] | None = None) -> str:
    """``config.pbtxt`` for ``platform: "tensorrt_plan"``; I/O taken from the engine, ``parameters``
    from :func:`graph_parameters`."""
    text = header + textwrap.dedent(f"""\
        name: "{name}"
        platform: "tensorrt_plan"
        default_model_filename: "model.plan"
        # Equal to the engine profile's max batch: Triton refuses a larger value.
        max_batch_size: {int(max_batch)}
        """)
    text += "".join(_io_block("input", s) for s in inputs) + "".join(_io_block("output", s) for s in outputs)
    text += f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: KIND_GPU\n  }}\n]\n"
    return text + _batching_block(dynamic_batching, queue_delay_us) + _parameters_block(parameters or {})


def cpu_config(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *, max_batch: int,
               instances: int = 1, threads: int = 0, dynamic_batching: bool = True,
               queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, header: str = "", name: str = MODEL_NAME,
               parameters: dict[str, str] | None = None) -> str:
    """``configs/cpu.pbtxt``: the Python backend running ``1/model.onnx`` through ONNX Runtime."""
    text = header + textwrap.dedent(f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: {int(max_batch)}
        """)
    text += "".join(_io_block("input", s) for s in inputs) + "".join(_io_block("output", s) for s in outputs)
    text += f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: KIND_CPU\n  }}\n]\n"
    text += _batching_block(dynamic_batching, queue_delay_us)
    return text + _parameters_block({"onnx_file": "model.onnx", "intra_op_threads": str(int(threads))}
                                    | (parameters or {}))


def parse_config(text: str, source: str = "config"):
    """``text`` parsed into Triton's ``ModelConfig`` protobuf: unknown fields and typos are errors."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ServeError("checking a Triton config needs tritonclient: pip install 'lcoan-edge[serve]'") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ServeError(f"{source} is not a valid Triton model config: {exc}") from None


def config_io(config) -> dict[str, list[TensorSpec]]:
    """Inputs and outputs of a parsed ``ModelConfig``, dims with the batch dimension (-1) added."""
    from tritonclient.grpc import model_config_pb2
    name = model_config_pb2.DataType.Name
    batch = (-1,) if config.max_batch_size > 0 else ()
    return {"inputs": [TensorSpec(t.name, name(t.data_type), batch + tuple(t.dims)) for t in config.input],
            "outputs": [TensorSpec(t.name, name(t.data_type), batch + tuple(t.dims)) for t in config.output]}


# --------------------------------------------------------------------------- engine and graph I/O
def network_io(onnx_path: str | Path, plugins: str | None = None) -> dict[str, list[TensorSpec]]:
    """I/O of the TensorRT network parsed from ``onnx_path`` (what an engine built from it exposes).

    Used where the engine itself cannot be deserialised (no GPU: TensorRT-RTX builds engines on a
    CPU but needs a supported GPU to load them)."""
    from engine.build import load_plugins, make_logger, parse_network, plugin_registered
    from engine.trt import import_trt
    trt = import_trt()
    if plugins and not plugin_registered(trt):  # a second load_library of the same file fails
        load_plugins(trt, plugins)
    logger = make_logger(trt)
    network, _parser = parse_network(trt, trt.Builder(logger), logger, Path(onnx_path))

    def spec(t) -> TensorSpec:
        return TensorSpec(t.name, TRT_TO_TRITON.get(str(t.dtype).split(".")[-1], str(t.dtype)), tuple(t.shape))
    return {"inputs": [spec(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [spec(network.get_output(i)) for i in range(network.num_outputs)]}


def plan_io(plan: str | Path, plugins: str | None = None) -> dict | None:
    """I/O and profile of a serialized engine, or ``None`` where it cannot be loaded (no GPU)."""
    from engine.build import load_plugins
    from engine.trt import device_info, import_trt
    if not device_info().has_gpu:
        return None
    from engine.build import plugin_registered
    trt = import_trt()
    if plugins and not plugin_registered(trt):
        load_plugins(trt, plugins)
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(Path(plan).read_bytes())
    if engine is None:
        return None
    out: dict = {"inputs": [], "outputs": [], "profile": {}}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = TRT_TO_TRITON.get(str(engine.get_tensor_dtype(name)).split(".")[-1], "?")
        out["inputs" if is_input else "outputs"].append(TensorSpec(name, dtype, tuple(engine.get_tensor_shape(name))))
        if is_input and not out["profile"]:  # the first input's (an i420 engine's y)
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            out["profile"] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
    return out


def onnx_io(onnx_path: str | Path) -> dict[str, list[TensorSpec]]:
    """I/O of an ONNX graph; symbolic dimensions become -1."""
    import onnx
    graph = load_onnx(onnx_path, external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(v.name, ONNX_TO_TRITON.get(onnx.TensorProto.DataType.Name(t.elem_type), "?"), dims)
    return {"inputs": [spec(v) for v in graph.input if v.name not in inits],
            "outputs": [spec(v) for v in graph.output]}


def io_mismatch(a: dict, b: dict) -> str | None:
    """First difference between two I/O descriptions (names, types, dims), or ``None``."""
    for kind in ("inputs", "outputs"):
        left, right = a[kind], b[kind]
        if [s.name for s in left] != [s.name for s in right]:
            return f"{kind} {[s.name for s in left]} vs {[s.name for s in right]}"
        for x, y in zip(left, right):
            if x.data_type != y.data_type:
                return f"{x.name}: data type {x.data_type} vs {y.data_type}"
            if tuple(x.dims) != tuple(y.dims):
                return f"{x.name}: dims {list(x.dims)} vs {list(y.dims)}"
    return None


# --------------------------------------------------------------------------- plugin library
def plugin_registration(path: str | Path) -> str:
    """How a TensorRT plugin library makes its creators known, from its ELF dynamic symbols.

    ``"dynamic"``: exports ``getCreators`` (registered only by ``IPluginRegistry::loadLibrary``);
    ``"static"``: imports ``getPluginRegistry`` and exports no ``getCreators`` (registers itself in
    a static initialiser when ``dlopen``ed, which is what Triton does); ``"none"`` otherwise."""
    try:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise ServeError("checking a plugin library needs pyelftools: pip install 'lcoan-edge[serve]'") from None
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            dynsym = elf.get_section_by_name(".dynsym")
            if dynsym is None:
                return "none"
            defined, undefined = set(), set()
            for sym in dynsym.iter_symbols():
                (undefined if sym["st_shndx"] == "SHN_UNDEF" else defined).add(sym.name)
            has_init = elf.get_section_by_name(".init_array") is not None
    except (OSError, ELFError) as exc:
        raise ServeError(f"plugin library {path}: not a readable ELF shared library ({exc})") from None
    from engine.trt import plugin_build_info
    recorded = plugin_build_info(path)   # the line plugins.build embeds, when it built the library
    if "getCreators" in defined or (recorded is not None and recorded.registration != "static"):
        return "dynamic"
    if "getPluginRegistry" in undefined and has_init:
        return "static"
    return "none"


def check_static_plugin(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ServeError(f"plugin library {path} not found; build {STATIC_PLUGIN_LIB} with `python -m plugins.build` "
                          "against the serving container's TensorRT")
    kind = plugin_registration(path)
    if kind != "static":
        why = ("it registers through getCreators (dynamic registration), which Triton never calls"
               if kind == "dynamic" else "it does not register a plugin creator when loaded")
        raise ServeError(f"plugin library {path} cannot serve in Triton: {why}; Triton loads plugins with "
                          f"dlopen (LD_PRELOAD or --backend-config=tensorrt,plugins=...), so it needs the "
                          f"self-registering {STATIC_PLUGIN_LIB}")
    return path


# --------------------------------------------------------------------------- repository
def _hw(value, what: str) -> tuple[int, int]:
    if isinstance(value, str):
        try:
            dims = tuple(int(v) for v in value.lower().split("x"))
        except ValueError:
            dims = ()
    else:
        dims = tuple(int(v) for v in value)
    if len(dims) != 2 or min(dims) < 1:
        raise ServeError(f"{what} {value!r}: expected HxW with positive sizes, e.g. 96x96")
    return dims


def serving_profile(max_batch: int, min_hw, opt_hw, max_hw):
    """min 1 x min_hw, opt and max at ``max_batch``: the batch range Triton's config must match."""
    from engine.build import make_profile
    if max_batch < 1:
        raise ServeError(f"max batch must be >= 1, got {max_batch}")
    (h0, w0), (h1, w1), (h2, w2) = _hw(min_hw, "--min-hw"), _hw(opt_hw, "--opt-hw"), _hw(max_hw, "--max-hw")
    return make_profile((1, 3, h0, w0), (max_batch, 3, h1, w1), (max_batch, 3, h2, w2))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def write_repository(out: str | os.PathLike, *, weights: str | None = None, onnx: str | None = None,
                     scale: int | None = None, precision: str = "fp16", sort: str = "onnx",
                     plugins: str | None = None, serve_plugins: str | None = None,
                     max_batch: int = DEFAULT_MAX_BATCH, min_hw=DEFAULT_MIN_HW, opt_hw=DEFAULT_OPT_HW,
                     max_hw=DEFAULT_MAX_HW, instances: int = 1, cpu_instances: int = 1, cpu_threads: int = 0,
                     queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, calib: str | None = None,
                     opt_level: int | None = None, work: str | os.PathLike | None = None, force: bool = False,
                     log: Callable[[str], None] = print, io: GraphIO | str | None = None) -> Repository:
    """Build the engine and write the model repository ``out`` (see the module docstring).

    ``work`` keeps the graphs the engine was built from (default: a temporary folder). ``plugins``
    is the library the builder loads for ``sort="plugin"`` (``liblcoan_plugins.so``);
    ``serve_plugins`` the self-registering one copied for Triton (default: ``liblcoan_plugins_static.so``
    beside ``plugins``). ``io``: the graph I/O when exporting from weights (``export.to_onnx --io``;
    a graph given as ``onnx`` keeps its own); both configs take their names, data types and dims
    from the engine and the CPU graph, which have the same I/O."""
    from engine.trt import trt_info
    from export.to_onnx import io_spec
    from lcoan.safeio import atomic_folder
    if onnx and io is not None:
        raise ServeError("--io is for exporting from weights; a graph given as --onnx keeps its own I/O")
    spec = read_io(onnx) if onnx else io_spec(io or "float")
    out = _check_out(Path(out), force, given=(weights, onnx, plugins, serve_plugins, calib))
    if instances < 1 or cpu_instances < 1:
        raise ServeError("instance counts must be >= 1")
    from lcoan.safeio import check_writable
    check_writable(out.parent / f".{out.name}.staging", what="model repository")  # before any build
    profile = serving_profile(max_batch, min_hw, opt_hw, max_hw)
    info = trt_info()   # fail before exporting when TensorRT is missing
    static_lib = _serving_plugin(sort, onnx, plugins, serve_plugins)

    tmp_work = None if work else tempfile.TemporaryDirectory(prefix="lcoan_triton_build_")
    work_dir = Path(work) if work else Path(tmp_work.name)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_folder(out) as staging:  # built beside out, renamed into place
            model_dir = staging / MODEL_NAME
            version = model_dir / "1"
            version.mkdir(parents=True)
            (model_dir / "configs").mkdir()
            source, result = _build_plan(version / "model.plan", work_dir, onnx=onnx, weights=weights,
                                         precision=precision, sort=sort, calib=calib, scale=scale, spec=spec,
                                         profile=profile, plugins=plugins, opt_level=opt_level, log=log)
            _copy_cpu_graph(version, work_dir, onnx=onnx, weights=weights, scale=scale, spec=spec)
            engine_io, graph_io = _checked_io(version, source.path, plugins, spec)
            props = load_onnx(version / "model.onnx", external_data=False).metadata_props
            scale_used = int({p.key: p.value for p in props}.get("lcoan_scale", scale or 2))  # written by export.to_onnx
            params = graph_parameters(spec)
            prod = production_config(
                engine_io["inputs"], engine_io["outputs"], max_batch=max_batch, instances=instances,
                queue_delay_us=queue_delay_us, parameters=params,
                header=f"# LCoAN x{scale_used}: {precision} TensorRT plan built by {info.label} "
                       f"({result.key.device}), profile {profile.label()}.\n"
                       "# The plan runs only under the TensorRT that built it: build it in the serving container.\n")
            cpu = cpu_config(graph_io["inputs"], graph_io["outputs"], max_batch=max_batch, instances=cpu_instances,
                             threads=cpu_threads, queue_delay_us=queue_delay_us, parameters=params,
                             header=_cpu_header(scale_used))
            _write_configs(staging, {model_dir / "config.pbtxt": prod, model_dir / "configs" / "cpu.pbtxt": cpu}, log)
            plugin_dest = _copy_plugin(model_dir, static_lib)
            _record_in_sidecar(version / "model.plan", max_batch, engine_io)
            (staging / "README.md").write_text(repository_readme(
                out, trt_label=info.label, flavour=info.flavour, precision=precision, profile=profile,
                max_batch=max_batch, scale=scale_used, plugin=plugin_dest.name if plugin_dest else None,
                sort=source.sort, io=spec))
    finally:
        if tmp_work is not None:
            tmp_work.cleanup()
    model_dir = out / MODEL_NAME
    return Repository(out, model_dir, model_dir / "1" / "model.plan", model_dir / "1" / "model.onnx",
                      (model_dir / "plugins" / static_lib.name) if static_lib is not None else None,
                      info.label, precision, profile.to_dict(), max_batch, engine_io)


def _cpu_header(scale: int) -> str:
    return (f"# LCoAN x{scale} on CPU: 1/model.onnx (FP32) through ONNX Runtime in the Python backend.\n"
            "# tritonserver --model-config-name=cpu selects this file.\n")


def add_cpu_model(root: str | os.PathLike, graph: str | os.PathLike, *, name: str,
                  max_batch: int = DEFAULT_MAX_BATCH, instances: int = 1, threads: int = 0,
                  queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, log: Callable[[str], None] = print) -> Path:
    """Add a CPU-only model ``name`` (``configs/cpu.pbtxt``, ``1/model.onnx``, ``1/model.py``) to the
    repository ``root``, beside the models already there: e.g. the same weights with another graph
    I/O (``export.to_onnx --io i420``), served by the same ``tritonserver --model-config-name=cpu``.
    ``graph``: an FP32 counting-sort graph, as the CPU config of :func:`write_repository` takes."""
    from engine.build import has_plugin_nodes
    from lcoan.safeio import atomic_folder
    model_dir = Path(root) / name
    if model_dir.exists():
        raise ServeError(f"{model_dir} exists; choose another model name")
    if has_plugin_nodes(load_onnx(graph, external_data=False)) or _graph_dtype(graph) != "fp32":
        raise ServeError(f"{graph} is not an FP32 counting-sort graph, which the CPU config needs")
    spec = read_io(graph)
    with atomic_folder(model_dir) as staging:
        (staging / "1").mkdir()
        (staging / "configs").mkdir()
        shutil.copy2(graph, staging / "1" / "model.onnx")
        shutil.copy2(MODEL_PY, staging / "1" / "model.py")
        io = onnx_io(staging / "1" / "model.onnx")
        text = cpu_config(io["inputs"], io["outputs"], max_batch=max_batch, instances=instances, threads=threads,
                          queue_delay_us=queue_delay_us, name=name, parameters=graph_parameters(spec),
                          header=_cpu_header(spec.scale or 2))
        _write_configs(staging, {staging / "configs" / "cpu.pbtxt": text}, log)
    return model_dir


def _check_out(out: Path, force: bool, given: Sequence[str | None]) -> Path:
    """``out`` if the repository may be written there: replaced only with ``force``, and never
    over one of the ``given`` inputs."""
    if out.exists() and not force:
        raise ServeError(f"{out} exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ServeError(f"{out} exists and is not a folder")
    for path in given:
        if path and out.exists() and _inside(Path(path), out):
            raise ServeError(f"{path} is inside {out}, which would be replaced; write the repository elsewhere")
    return out


def _serving_plugin(sort: str, onnx: str | None, plugins: str | None, serve_plugins: str | None) -> Path | None:
    """The self-registering plugin library Triton needs for a plugin engine (checked); None without one."""
    from engine.build import has_plugin_nodes
    if not (sort == "plugin" or (onnx and has_plugin_nodes(load_onnx(onnx, external_data=False)))):
        return None
    if serve_plugins is None and plugins and Path(plugins).name.startswith("liblcoan_plugins_"):
        # liblcoan_plugins_trt11.so -> liblcoan_plugins_static_trt11.so (plugins.build's names)
        name = Path(plugins).name
        serve_plugins = str(Path(plugins).with_name(name.replace("liblcoan_plugins_", "liblcoan_plugins_static_", 1)))
    if serve_plugins is None:
        raise ServeError("a --sort plugin engine needs the plugin libraries: --plugins liblcoan_plugins_trt<major>.so "
                         f"(to build) and {STATIC_PLUGIN_LIB} beside it or as --serve-plugins (for Triton)")
    return check_static_plugin(serve_plugins)


def _build_plan(plan: Path, work_dir: Path, *, onnx, weights, precision, sort, calib, scale, spec, profile,
                plugins, opt_level, log):
    """The engine, built in ``work_dir`` (with its graphs) and copied to ``plan`` with its sidecar:
    ``(GraphSource, BuildResult)``."""
    from engine import cache
    from engine.build import build_engine
    from engine.graph_source import prepare_graph
    engine_out = work_dir / "model.plan"
    source = prepare_graph(onnx_path=onnx, weights=weights, precision=precision, sort=sort, out=engine_out,
                           calib=calib, scale=scale, log=log, io=None if onnx else spec)
    result = build_engine(source.path, engine_out, precision=precision, profile=profile, plugins=plugins,
                          opt_level=opt_level, log=log, extra={"sort": source.sort, "timings": source.timings})
    shutil.copy2(engine_out, plan)
    shutil.copy2(cache.sidecar_path(engine_out), cache.sidecar_path(plan))
    return source, result


def _copy_cpu_graph(version: Path, work_dir: Path, *, onnx, weights, scale, spec: GraphIO) -> None:
    """The CPU config's graph and model: FP32 with the counting sort (ONNX Runtime needs no plugin)."""
    from engine.build import has_plugin_nodes
    from export.to_onnx import export_onnx, load_weights
    if onnx and not has_plugin_nodes(load_onnx(onnx, external_data=False)) and _graph_dtype(onnx) == "fp32":
        cpu_graph = Path(onnx)
    elif onnx:
        raise ServeError(f"{onnx} is not an FP32 counting-sort graph; the CPU config needs one: "
                         "give that graph as --onnx (or --weights) and choose the engine with --fp16/--int8")
    else:
        cpu_graph = export_onnx(load_weights(weights, scale), work_dir / "model.fp32.onnx", sort="onnx", io=spec)
    shutil.copy2(cpu_graph, version / "model.onnx")
    shutil.copy2(MODEL_PY, version / "model.py")


def _checked_io(version: Path, network: Path, plugins: str | None, spec: GraphIO) -> tuple[dict, dict]:
    """The I/O of the plan (or of the network it was built from) and of the CPU graph, which must
    agree with each other and with ``spec``: ``(engine_io, graph_io)``."""
    engine_io = plan_io(version / "model.plan", plugins) or network_io(network, plugins)
    graph_io = onnx_io(version / "model.onnx")
    names = ([s.name for s in engine_io["inputs"]], [s.name for s in engine_io["outputs"]])
    if names != (list(spec.inputs), list(spec.outputs)):
        raise ServeError(f"the engine's I/O is {names[0]} -> {names[1]}, not {list(spec.inputs)} -> "
                         f"{list(spec.outputs)} ({spec.describe()})")
    differs = io_mismatch(engine_io, graph_io)
    if differs:
        raise ServeError(f"the engine and the CPU graph disagree ({differs}); build both from the same weights")
    return engine_io, graph_io


def _write_configs(staging: Path, configs: dict[Path, str], log: Callable[[str], None]) -> None:
    """Each config, checked against Triton's schema where tritonclient is installed."""
    for path, text in configs.items():
        try:
            parse_config(text, str(path.relative_to(staging)))
        except ServeError as exc:
            if "needs tritonclient" not in str(exc):
                raise
            log(f"not checked against Triton's schema: {exc}")
        path.write_text(text)


def _copy_plugin(model_dir: Path, static_lib: Path | None) -> Path | None:
    if static_lib is None:
        return None
    dest = model_dir / "plugins" / static_lib.name
    dest.parent.mkdir()
    shutil.copy2(static_lib, dest)
    check_static_plugin(dest)  # the copy is the self-registering library
    return dest


def _record_in_sidecar(plan: Path, max_batch: int, engine_io: dict) -> None:
    """What the configs were written from, in the plan's sidecar (``triton``)."""
    from engine import cache
    side = json.loads(cache.sidecar_path(plan).read_text())
    side["triton"] = {"max_batch_size": max_batch,
                      "io": {k: [s.__dict__ for s in v] for k, v in engine_io.items() if k != "profile"}}
    cache.sidecar_path(plan).write_text(json.dumps(side, indent=2) + "\n")


def _graph_dtype(path: str | Path) -> str:
    from export.precision import graph_precision
    return graph_precision(load_onnx(path, external_data=False))


def repository_readme(out: Path, *, trt_label: str, flavour: str, precision: str, profile, max_batch: int,
                      scale: int, plugin: str | None, sort: str, io: GraphIO | None = None) -> str:
    repo = out.name
    mode = io.mode if io is not None else "float"
    io_text = {
        "float": f"input `lr` (FP32, N x 3 x H x W, RGB in [0, 1]), output `sr` (FP32, N x 3 x {scale}H x {scale}W)",
        "rgb8": f"input `lr` (UINT8, N x H x W x 3, RGB), output `sr` (UINT8, N x {scale}H x {scale}W x 3)",
        "i420": f"inputs `y` (UINT8, N x H x W), `u`, `v` (UINT8, N x H/2 x W/2; H, W even), outputs `y_sr`, "
                f"`u_sr`, `v_sr` at {scale}x: I420 in {io.colorspace if io else ''} {io.range if io else ''} range",
    }[mode]
    plugin_path = f"/models/{MODEL_NAME}/plugins/{plugin}"
    backend_config = f" \\\n    --backend-config=tensorrt,plugins={plugin_path}" if plugin else ""
    rtx_note = ("\n**This plan was built by TensorRT-RTX** (a CPU-only build check): Triton's TensorRT backend "
                "cannot load it. Rebuild it inside the serving container (below).\n" if flavour == "tensorrt_rtx" else "")
    plugin_section = textwrap.dedent(f"""\

        ## Plugin library

        The plan uses the `LCoAClusterSort` plugin (`--sort plugin`). Triton loads plugin libraries with
        `dlopen` and never calls `getCreators`, so `{MODEL_NAME}/plugins/{plugin}` is the
        self-registering build (checked when this repository was written). Load it with
        `--backend-config=tensorrt,plugins=...` (above) or `LD_PRELOAD={plugin_path}`. It must be built
        against the container's TensorRT major version, like the plan.
        """) if plugin else ""
    return textwrap.dedent(f"""\
        # LCoAN x{scale} Triton model repository

        Written by `python -m export.to_triton`. Model `{MODEL_NAME}`: {io_text}. H and W are free within the engine profile
        ({profile.label()}); `max_batch_size` is {max_batch}, the profile's max batch. The dynamic batcher only
        batches requests of equal H x W, so clients send fixed-size tiles (`python -m app --backend triton`).

        | file | what |
        |---|---|
        | `{MODEL_NAME}/config.pbtxt` | production: `tensorrt_plan`, GPU instances, dynamic batching |
        | `{MODEL_NAME}/1/model.plan` | {precision} engine, {sort} sort, built by {trt_label}; `model.plan.json` records how |
        | `{MODEL_NAME}/configs/cpu.pbtxt` | CPU: Python backend, `1/model.py` runs `1/model.onnx` (FP32) with ONNX Runtime |

        ## The rule

        **The engine must be built by the same TensorRT as the server's container** (same version, same
        flavour, same GPU architecture). A plan from another TensorRT is refused at load time. Check the
        TensorRT version in the Triton release notes of your container tag and build the plan there.
        {rtx_note}
        ## Production (GPU, NVIDIA's Triton container)

        Build the plan inside the container, then serve:

        ```bash
        docker run --gpus all --rm -v $PWD:/work -w /work nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
            bash -c "pip install -e '.[export]' && python -m export.to_triton --{precision} --out {repo} --force"
        docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/{repo}:/models \\
            nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
            tritonserver --model-repository=/models{backend_config}
        ```
        {plugin_section}
        ## CPU (ONNX Runtime in the Python backend)

        ```bash
        tritonserver --model-repository=/models --model-config-name=cpu
        ```

        The Python backend's stub imports `onnxruntime` and `numpy` from the `python` first on `PATH`, and needs
        numpy < 2 for Triton 2.51. Without a container, the `tritonserver` bundled in `nvidia-pytriton==0.7.0`
        (Python backend only) serves this config; from the project (after `make serve-setup`):

        ```bash
        python -m serve.server {repo} --config cpu                   # HTTP 8000, gRPC 8001, metrics 8002 on 127.0.0.1
        python -m serve.server {repo} --config cpu --print-command   # the exact tritonserver command line
        ```

        ## Clients

        Any KServe v2 client (HTTP `/v2/models/{MODEL_NAME}/infer`, gRPC `inference.GRPCInferenceService`), e.g.
        `tritonclient`, or the project's app: `python -m app clip.mp4 -o out.mp4 --backend triton --url 127.0.0.1:8001`.
        """)
