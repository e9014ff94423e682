"""TensorRT engines: real builds with the installed TensorRT (TensorRT-RTX on CPU-only machines),
sidecars and the engine cache, one-line errors, and the runtime's behaviour without a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch

import lcoan
from engine import cache as cache_lib
from engine.errors import EngineError
from export import export_onnx
from conftest import REPO, shared_path

pytestmark = pytest.mark.trt

trt_mod = pytest.importorskip("engine.trt")
try:
    trt_mod.import_trt()
except trt_mod.TrtNotInstalled as exc:  # pragma: no cover - CI installs tensorrt-rtx-cu13
    pytest.skip(f"no TensorRT: {exc}", allow_module_level=True)

from engine import build as engine_build  # noqa: E402
from engine.build import build_engine, make_profile  # noqa: E402

PROFILE = ("1x3x16x16", "1x3x32x32", "1x3x64x80")  # max 64*80 = 5120 positions > TopK's 3840
PYTHON = sys.executable


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def graphs(tiny, tmp_path_factory):
    """tiny x2 graphs: fp32, fp16, int8 (Q/DQ from Set14 LR tiles), all with --sort onnx."""
    folder = tmp_path_factory.mktemp("trt")
    out = {"fp32": export_onnx(tiny, folder / "tiny.onnx"),
           "fp16": export_onnx(tiny, folder / "tiny_fp16.onnx", dtype="fp16")}
    from calib.quantize import quantize
    images = shared_path("data", "benchmark", "Set14", "LR_bicubic", "X2")
    out["int8"] = quantize(out["fp32"], folder / "tiny_int8.onnx", images, num=8, tile=(48, 48)).path
    out["dir"] = folder
    return out


def _build(graphs, precision, out=None, **kw):
    kw.setdefault("profile", make_profile(*PROFILE))
    kw.setdefault("opt_level", 0)
    return build_engine(graphs[precision], out or graphs["dir"] / f"tiny_{precision}.engine",
                        precision=precision, log=lambda _m: None, **kw)


# --------------------------------------------------------------------------- real builds
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tiny_engine_builds_and_serializes(graphs, precision):
    result = _build(graphs, precision, force=True)
    engine = result.engine
    assert engine.is_file() and engine.stat().st_size > 100_000
    side = json.loads(cache_lib.sidecar_path(engine).read_text())
    net = side["network"]
    assert net["inputs"] == ["lr"] and net["outputs"] == ["sr"]
    assert net["layers"] > 100
    types = net["layer_types"]
    assert "CONVOLUTION" in types and "MATRIX_MULTIPLY" in types
    # TensorRT parses each ArgMax (cluster assignment) as a TopK with k = 1; the sort itself is the
    # counting sort, so a profile above TopK's 3840-element cap builds.
    argmax = sum(n.op_type == "ArgMax" for n in onnx.load(str(graphs[precision])).graph.node)
    assert types.get("TOPK", 0) == argmax
    if precision == "int8":
        assert types.get("QUANTIZE", 0) > 0 and types.get("DEQUANTIZE", 0) > 0
    else:
        assert "QUANTIZE" not in types
    assert side["precision"] == precision and side["key"]["precision"] == precision
    assert side["profile"]["max"] == [1, 3, 64, 80]
    assert side["onnx_sha256"] == cache_lib.sha256_file(graphs[precision])
    assert side["engine_sha256"] == cache_lib.sha256_file(engine)
    assert side["key"]["trt"].startswith(("tensorrt ", "tensorrt_rtx "))
    assert side["timings"]["build_s"] > 0
    # The serialized engine deserializes only where a GPU is: building is what is checked here.


@pytest.mark.parametrize("preset, precision", [("edge", "fp32"), ("edge", "fp16"), ("edge", "int8"),
                                               ("realtime", "fp16"), ("realtime", "int8")])
@pytest.mark.slow
def test_edge_engines_build(tmp_path, preset, precision):
    """The bundled edge weights in every precision; the realtime preset (random weights: the
    graph, not the values, decides what TensorRT accepts) in the app's precisions."""
    torch.manual_seed(0)
    model = lcoan.load_model("edge_x2") if preset == "edge" else lcoan.build_model(preset, scale=2).eval()
    graph = export_onnx(model, tmp_path / "edge.onnx", dtype="fp16" if precision == "fp16" else "fp32")
    if precision == "int8":
        from calib.quantize import default_exclusions, quantize
        images = shared_path("data", "benchmark", "Set14", "LR_bicubic", "X2")
        graph = quantize(graph, tmp_path / "edge_int8.onnx", images, num=4, tile=(48, 48),
                         exclude=default_exclusions(graph)).path
    result = build_engine(graph, tmp_path / "edge.engine", precision=precision, profile=make_profile(*PROFILE),
                          opt_level=0, log=lambda _m: None)
    net = result.sidecar["network"]
    assert net["inputs"] == ["lr"] and net["outputs"] == ["sr"] and net["layers"] > 1000
    assert (net["layer_types"].get("QUANTIZE", 0) > 0) == (precision == "int8")
    assert result.engine.stat().st_size > 1_000_000


def test_inspect_network_counts(graphs):
    info = {p: engine_build.inspect_onnx(graphs[p]) for p in ("fp32", "fp16", "int8")}
    for p, net in info.items():
        assert (net.inputs, net.outputs) == (["lr"], ["sr"]), p
    assert info["int8"].layers > info["fp32"].layers  # Q/DQ layers on top
    assert info["fp16"].layer_types.get("CAST", 0) > info["fp32"].layer_types.get("CAST", 0)


# --------------------------------------------------------------------------- cache
def test_cache_reuses_when_nothing_changes(graphs):
    first = _build(graphs, "fp32", graphs["dir"] / "cache.engine", force=True)
    mtime = first.engine.stat().st_mtime_ns
    again = _build(graphs, "fp32", graphs["dir"] / "cache.engine")
    assert again.reused and again.key == first.key
    assert first.engine.stat().st_mtime_ns == mtime


def test_cache_key_changes_with_every_keyed_input(graphs, monkeypatch, tmp_path):
    base = engine_build.engine_key(graphs["fp32"], "fp32", make_profile(*PROFILE), None, {"opt_level": 0})
    variants = {
        "onnx": engine_build.engine_key(graphs["fp16"], "fp32", make_profile(*PROFILE), None, {"opt_level": 0}),
        "precision": engine_build.engine_key(graphs["fp32"], "fp16", make_profile(*PROFILE), None, {"opt_level": 0}),
        "profile": engine_build.engine_key(graphs["fp32"], "fp32", make_profile("1x3x16x16", "1x3x32x32", "1x3x64x96"),
                                     None, {"opt_level": 0}),
        "builder": engine_build.engine_key(graphs["fp32"], "fp32", make_profile(*PROFILE), None, {"opt_level": 3}),
    }
    plugin = tmp_path / "libfake.so"
    plugin.write_bytes(b"not really a library")
    variants["plugins"] = engine_build.engine_key(graphs["fp32"], "fp32", make_profile(*PROFILE), str(plugin),
                                            {"opt_level": 0})
    real_info = engine_build.trt_info()
    monkeypatch.setattr(engine_build, "trt_info", lambda *a: type(real_info)(**{**real_info.to_dict(), "version": "10.3.0"}))
    variants["trt version"] = engine_build.engine_key(graphs["fp32"], "fp32", make_profile(*PROFILE), None, {"opt_level": 0})
    monkeypatch.setattr(engine_build, "trt_info", lambda *a: real_info)
    monkeypatch.setattr(engine_build, "device_info", lambda *a: trt_mod.DeviceInfo("Orin", "8.7"))
    variants["device"] = engine_build.engine_key(graphs["fp32"], "fp32", make_profile(*PROFILE), None, {"opt_level": 0})
    for name, key in variants.items():
        assert key.digest() != base.digest(), name
    assert variants["device"].device == "Orin (sm 8.7)"


def test_cache_rebuilds_on_mismatch_and_says_why(graphs):
    out = graphs["dir"] / "rebuild.engine"
    _build(graphs, "fp32", out, force=True)
    messages = []
    result = build_engine(graphs["fp32"], out, precision="fp32", opt_level=0, log=messages.append,
                          profile=make_profile("1x3x16x16", "1x3x32x32", "1x3x48x48"))
    assert not result.reused
    assert any("rebuilding" in m and "profile" in m for m in messages)


def test_engine_from_other_tensorrt_is_never_loaded_blindly(graphs):
    out = graphs["dir"] / "other.engine"
    result = _build(graphs, "fp32", out, force=True)
    label = result.key.trt
    assert cache_lib.check_loadable(out, label)["key"]["trt"] == label
    with pytest.raises(EngineError, match="was built with"):
        cache_lib.check_loadable(out, "tensorrt 10.3.0")
    side = cache_lib.sidecar_path(out)
    data = json.loads(side.read_text())
    data["key"]["trt"] = "tensorrt 11.0.0"
    side.write_text(json.dumps(data))
    reuse, reason = cache_lib.lookup(out, result.key)
    assert not reuse and "trt" in reason
    with pytest.raises(EngineError, match="tensorrt 11.0.0"):
        cache_lib.check_loadable(out, label)
    side.unlink()
    with pytest.raises(EngineError, match="no sidecar"):
        cache_lib.check_loadable(out, label)
    out.write_bytes(b"tampered")
    _build(graphs, "fp32", out, force=True)
    out.write_bytes(out.read_bytes() + b"x")
    with pytest.raises(EngineError, match="sha256"):
        cache_lib.check_loadable(out, label)


# --------------------------------------------------------------------------- errors
def _cli(*args, env=None, cwd=None):
    return subprocess.run([PYTHON, "-m", "export.to_trt", *args], capture_output=True, text=True,
                          env=env or _env(), cwd=cwd or REPO, timeout=300)


def test_missing_tensorrt_is_one_line_with_install_hint():
    code = textwrap.dedent("""
        import sys
        sys.modules["tensorrt"] = None        # import fails as if not installed
        sys.modules["tensorrt_rtx"] = None
        from export.errors import run_cli
        from pipeline.to_trt import main
        run_cli(main, ["--fp16"])
    """)
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not installed")
    assert "pip install tensorrt-rtx-cu13" in lines[0] and "JetPack" in lines[0]


def test_missing_tensorrt_from_runtime(monkeypatch):
    from engine import runtime
    monkeypatch.setattr(runtime, "import_trt", lambda: (_ for _ in ()).throw(
        trt_mod.TrtNotInstalled("TensorRT is not installed; " + trt_mod.INSTALL_HINT)))
    with pytest.raises(runtime.RuntimeUnavailable, match="tensorrt-rtx-cu13"):
        runtime.require_runtime()


@pytest.mark.parametrize("args,message", [
    (["--min", "1x3x32x32", "--opt", "1x3x16x16"], "inconsistent shape profile: height"),
    (["--max", "1x3x64"], "expected 4 dimensions"),
    (["--min", "1x1x16x16"], "3 channels"),
    (["--plugins", "/nonexistent/liblcoan_plugins.so"], "plugin library /nonexistent/liblcoan_plugins.so not found"),
])
def test_cli_one_line_errors(args, message):
    proc = _cli("--fp16", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_plugin_library_that_fails_to_load(tmp_path):
    bogus = tmp_path / "liblcoan_plugins.so"
    bogus.write_bytes(b"\x7fELF not a real library")
    code = ("from engine.build import load_plugins; from engine.trt import import_trt\n"
            f"load_plugins(import_trt(), {str(bogus)!r})")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "could not load plugin library" in proc.stderr


def test_plugin_graph_without_library_is_a_clear_error(tiny, tmp_path):
    graph = export_onnx(tiny, tmp_path / "plugin.onnx", sort="plugin")
    with pytest.raises(EngineError, match="uses the LCoAClusterSort plugin; pass --plugins"):
        build_engine(graph, tmp_path / "p.engine", precision="fp32", profile=make_profile(*PROFILE),
                     log=lambda _m: None)


@pytest.mark.slow
def test_cli_builds_from_weights_then_reuses(tiny_weights, tmp_path):
    args = ["--weights", str(tiny_weights), "--fp16", "--min", PROFILE[0], "--opt", PROFILE[1], "--max", PROFILE[2],
            "--out", str(tmp_path / "cli.engine"), "--opt-level", "0"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout and (tmp_path / "cli.engine.json").is_file()
    assert (tmp_path / "cli_fp16.onnx").is_file()
    second = _cli(*args)
    assert second.returncode == 0 and "reusing" in second.stdout, second.stdout + second.stderr


# --------------------------------------------------------------------------- runtime
def test_runtime_without_gpu_raises_one_line(graphs):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present; the no-GPU error path does not apply")
    from engine.runtime import Engine, RuntimeUnavailable
    result = _build(graphs, "fp32")
    with pytest.raises(RuntimeUnavailable, match="no CUDA GPU") as info:
        Engine(result.engine)
    assert "\n" not in str(info.value)


@pytest.mark.gpu
def test_runtime_runs_engine_on_gpu(graphs):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: engines can be built here but not run")
    from export import ort_ops
    from engine.runtime import Engine
    try:
        engine = Engine(_build(graphs, "fp32").engine)
    except EngineError as exc:  # e.g. TensorRT-RTX on an unsupported compute capability
        pytest.skip(f"engine cannot run on this GPU: {exc}")
    lr = torch.rand(2, 3, 24, 20, device="cuda")
    sr = engine(lr)
    torch.cuda.synchronize()
    ref = ort_ops.session(str(graphs["fp32"])).run(["sr"], {"lr": lr.cpu().numpy()})[0]
    assert sr.shape == (2, 3, 48, 40)
    assert np.abs(sr.cpu().numpy() - ref).max() < 1e-3


# --------------------------------------------------------------------------- integer I/O
@pytest.mark.parametrize("io, precision", [("rgb8", "fp16"), ("i420", "fp32")])
def test_integer_io_engines_build(graphs, io, precision):
    """uint8 in and out: rgb8 (N, H, W, 3); i420 y (N, H, W), u and v (N, H/2, W/2); the LR profile
    N x 3 x H x W becomes each input's shapes."""
    from export.to_onnx import with_io
    from lcoan.graph_io import save_onnx
    graph = save_onnx(with_io(onnx.load(str(graphs[precision])), io), graphs["dir"] / f"tiny_{io}_{precision}.onnx")
    result = build_engine(graph, graphs["dir"] / f"tiny_{io}_{precision}.engine", precision=precision,
                          profile=make_profile("1x3x16x16", "1x3x32x32", "2x3x48x64"), opt_level=0,
                          force=True, log=lambda _m: None)
    side = result.sidecar
    names = {"rgb8": (["lr"], ["sr"]), "i420": (["y", "u", "v"], ["y_sr", "u_sr", "v_sr"])}[io]
    assert (side["network"]["inputs"], side["network"]["outputs"]) == names
    assert side["io"]["mode"] == io and side["io"]["scale"] == 2
    assert (side["io"]["colorspace"], side["io"]["range"]) == (("bt709", "limited") if io == "i420" else (None, None))
    assert result.engine.stat().st_size > 100_000
    if io == "i420":
        with pytest.raises(EngineError, match="even width and height"):
            build_engine(graph, graphs["dir"] / "odd.engine", precision=precision,
                         profile=make_profile("1x3x15x16", "1x3x32x32", "1x3x48x64"), log=lambda _m: None)
