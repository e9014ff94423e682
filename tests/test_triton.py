"""Triton Inference Server: the model repository of ``python -m export.to_triton`` served by a real
``tritonserver`` (2.51, bundled in nvidia-pytriton, from ``make serve-setup``'s .venv-serve) on
127.0.0.1 with ``--model-config-name=cpu``; the production config checked against Triton's schema
and against the engine built by the installed TensorRT (TensorRT-RTX on CPU-only machines).

One server for the whole module; every request goes to loopback, bounded in count and time.
"""
from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, required, shared_path, skip_unless_required, wait_until

# Every test here builds a model repository (TensorRT) or starts a real Triton server.
pytestmark = [pytest.mark.slow, pytest.mark.triton, pytest.mark.trt]

# Missing pieces skip here and fail under LCOAN_REQUIRE_TRITON=1 (CI installs them all).
for _module in ("tritonclient.grpc", "tritonclient.http", "elftools"):
    try:
        importlib.import_module(_module)
    except ImportError as _exc:
        skip_unless_required("triton", f"serving extra not installed ({_exc}): pip install -e '.[serve]'", module=True)
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from engine import cache as cache_lib  # noqa: E402
from serve.errors import ServeError  # noqa: E402
from serve import server as serve_server  # noqa: E402
from serve import repository  # noqa: E402

try:
    SERVING_ENV = serve_server.find_serving_env()
    NO_SERVER = ""
except serve_server.ServeError as exc:  # the serving venv could not be installed here
    SERVING_ENV, NO_SERVER = None, f"no Triton server: {exc}"

trt_mod = pytest.importorskip("engine.trt")
try:
    TRT = trt_mod.import_trt()
except trt_mod.TrtNotInstalled as exc:  # pragma: no cover - CI installs tensorrt-rtx-cu13
    skip_unless_required("triton", f"no TensorRT to build the plan: {exc}", module=True)

MAX_BATCH = 4
MODEL = repository.MODEL_NAME
I420_MODEL = "lcoan_i420"
needs_server = pytest.mark.skipif(SERVING_ENV is None and not required("triton"), reason=NO_SERVER or "n/a")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The repository from the bundled weights: FP16 plan with a small profile (fast build)."""
    folder = tmp_path_factory.mktemp("triton")
    return repository.write_repository(folder / "repo", precision="fp16", max_batch=MAX_BATCH, min_hw="16x16",
                                   opt_hw="32x32", max_hw="64x64", opt_level=0, work=folder / "work",
                                   log=lambda _m: None)


@pytest.fixture(scope="module")
def ort_session(repo):
    import onnxruntime as ort
    return ort.InferenceSession(str(repo.onnx), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def i420_graph(tmp_path_factory):
    """The bundled weights as an I420 graph (BT.601 full range: not the default, so that the
    colours the client reads can only come from the config)."""
    from export.to_onnx import export_onnx, load_weights
    folder = tmp_path_factory.mktemp("i420")
    return export_onnx(load_weights(None, None), folder / "i420.onnx", io="i420", colorspace="bt601", range="full")


@pytest.fixture(scope="module")
def server(repo, i420_graph):
    if SERVING_ENV is None:
        skip_unless_required("triton", NO_SERVER)
    # a second, CPU-only model beside `lcoan`: the same weights with integer I420 I/O
    repository.add_cpu_model(repo.root, i420_graph, name=I420_MODEL, max_batch=MAX_BATCH, log=lambda _m: None)
    srv = serve_server.TritonServer(repo.root, config_name="cpu", startup_timeout_s=180)
    srv.start()  # polls the model's ready endpoint until its deadline
    # and the whole server's, which every test here relies on: polled with a deadline, never slept on
    wait_until(lambda: _http_ok(f"http://{srv.http_url}/v2/health/ready"), 30, "tritonserver /v2/health/ready",
               alive=srv.alive)
    yield srv
    srv.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _grpc_infer(client, x, dtype="FP32"):
    inp = grpcclient.InferInput("lr", list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    return client.infer(MODEL, [inp], client_timeout=120).as_numpy("sr")


def _stats(client) -> tuple[int, int]:
    stats = client.get_inference_statistics(MODEL, as_json=True, client_timeout=10)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


# --------------------------------------------------------------------------- repository and configs
def test_repository_layout_and_readme(repo):
    model = repo.model_dir
    for name in ("config.pbtxt", "configs/cpu.pbtxt", "1/model.plan", "1/model.plan.json", "1/model.onnx",
                 "1/model.py"):
        assert (model / name).is_file(), name
    assert not (model / "plugins").exists()  # --sort onnx: no plugin library
    readme = (repo.root / "README.md").read_text()
    assert "tritonserver --model-repository=/models --model-config-name=cpu" in readme
    assert "tritonserver --model-repository=/models" in readme
    assert "same TensorRT as the server's container" in readme
    side = json.loads((model / "1" / "model.plan.json").read_text())
    assert side["engine_sha256"] == cache_lib.sha256_file(repo.plan)


def test_production_config_parses_and_matches_engine_and_graph(repo):
    from google.protobuf import text_format
    prod = text_format.Parse(repo.production_config.read_text(), model_config_pb2.ModelConfig())
    assert prod.name == MODEL and prod.platform == "tensorrt_plan"
    assert prod.default_model_filename == "model.plan"
    side = json.loads((repo.model_dir / "1" / "model.plan.json").read_text())
    profile = side["profile"]
    # Triton refuses a max_batch_size the engine profile cannot take; batch 1 must fit too.
    assert prod.max_batch_size == profile["max"][0] == MAX_BATCH and profile["min"][0] == 1
    assert [g.kind for g in prod.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert prod.HasField("dynamic_batching")
    assert {k: v.string_value for k, v in prod.parameters.items()} == {"lcoan_io": "float"}

    # The engine's I/O, read with the installed TensorRT from the graph it was built from (the
    # sidecar's sha256 ties the two; a CPU-only TensorRT-RTX cannot deserialise the plan itself).
    graph = Path(side["onnx"])
    assert cache_lib.sha256_file(graph) == side["onnx_sha256"]
    logger = TRT.Logger(TRT.Logger.ERROR)
    network = TRT.Builder(logger).create_network(1 << int(TRT.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert TRT.OnnxParser(network, logger).parse_from_file(str(graph))
    engine = [(t.name, str(t.dtype).split(".")[-1], tuple(t.shape))
              for t in [network.get_input(i) for i in range(network.num_inputs)]
              + [network.get_output(i) for i in range(network.num_outputs)]]
    dtype_name = model_config_pb2.DataType.Name
    config = [(t.name, dtype_name(t.data_type), (-1,) + tuple(t.dims)) for t in list(prod.input) + list(prod.output)]
    trt_names = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16"}
    assert [(n, trt_names.get(d, d), s) for n, d, s in engine] == config
    assert config == [("lr", "TYPE_FP32", (-1, 3, -1, -1)), ("sr", "TYPE_FP32", (-1, 3, -1, -1))]

    # ... and the ONNX graph of the CPU config, with the CPU config itself
    import onnx
    g = onnx.load(str(repo.onnx), load_external_data=False).graph
    onnx_io = [(v.name, onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim))
               for v in list(g.input) + list(g.output)]
    assert [(n, "TYPE_FP32" if d == "FLOAT" else d, s) for n, d, s in onnx_io] == config
    cpu = text_format.Parse(repo.cpu_config.read_text(), model_config_pb2.ModelConfig())
    assert cpu.backend == "python" and cpu.max_batch_size == prod.max_batch_size
    assert [(t.name, dtype_name(t.data_type), (-1,) + tuple(t.dims)) for t in list(cpu.input) + list(cpu.output)] == config
    assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


def test_schema_check_catches_a_typo(repo):
    text = repo.production_config.read_text().replace("max_batch_size", "max_batch_sise")
    with pytest.raises(ServeError, match="not a valid Triton model config"):
        repository.parse_config(text, "config.pbtxt")


def test_cli_refuses_to_replace_without_force(repo):
    out = subprocess.run([sys.executable, "-m", "export.to_triton", "--out", str(repo.root)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {repo.root} exists; pass --force to replace it"]


# --------------------------------------------------------------------------- plugin library
def _compile(tmp_path: Path, name: str, source: str) -> Path:
    cxx = next((c for c in ("g++", "c++", "clang++") if __import__("shutil").which(c)), None)
    if cxx is None:
        pytest.skip("no C++ compiler to build the ELF samples")
    src = tmp_path / f"{name}.cpp"
    src.write_text(source)
    lib = tmp_path / f"lib{name}.so"
    subprocess.run([cxx, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=120)
    return lib


def test_plugin_registration_is_read_from_the_elf_symbols(tmp_path):
    static = _compile(tmp_path, "selfreg", """
        extern "C" void* getPluginRegistry();
        namespace { struct R { R() { getPluginRegistry(); } } registrar; }
    """)
    dynamic = _compile(tmp_path, "dyn", """
        extern "C" __attribute__((visibility("default"))) void* const* getCreators(int& n) { n = 0; return nullptr; }
    """)
    assert repository.plugin_registration(static) == "static"
    assert repository.plugin_registration(dynamic) == "dynamic"
    with pytest.raises(ServeError, match="getCreators.*self-registering liblcoan_plugins_static_trt"):
        repository.check_static_plugin(dynamic)
    with pytest.raises(ServeError, match="not a readable ELF"):
        repository.plugin_registration(Path(__file__))


def test_plugin_engine_repository_copies_the_static_library(tmp_path):
    from engine.trt import plugin_abi_major
    from plugins import build as pbuild
    from plugins import loader
    # plugins.build's default folder, else the one tests/test_plugins.py builds into (vendored headers)
    for folder in (None, pbuild.DEFAULT_BUILD_DIR / "test" / f"trt{plugin_abi_major()}"):
        dynamic, static = (loader.plugin_library_path(plugin_abi_major(), static=st, build_dir=folder)
                           for st in (False, True))
        if dynamic.is_file() and static.is_file():
            break
    else:
        pytest.skip(f"plugin libraries not built ({dynamic.name}, {static.name}: python -m plugins.build "
                    "needs the TensorRT headers)")
    assert repository.plugin_registration(dynamic) == "dynamic"
    out = tmp_path / "repo"
    # The command line: it restarts itself when TensorRT-RTX needs its unversioned library for plugins.
    run = subprocess.run([sys.executable, "-m", "export.to_triton", "--out", str(out), "--sort", "plugin", "--fp32",
                          "--plugins", str(dynamic), "--max-batch", "2", "--opt-hw", "32x32", "--max-hw", "64x64",
                          "--opt-level", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    copied = out / MODEL / "plugins" / static.name
    assert copied.read_bytes() == static.read_bytes()      # the self-registering one, not the dynamic one
    assert repository.plugin_registration(copied) == "static"
    side = json.loads((out / MODEL / "1" / "model.plan.json").read_text())
    assert side["sort"] == "plugin" and side["network"]["layer_types"].get("PLUGIN_V3", 0) >= 1
    assert f"--backend-config=tensorrt,plugins=/models/lcoan/plugins/{static.name}" in (out / "README.md").read_text()


# --------------------------------------------------------------------------- the real server
@needs_server
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (1, 3, 40, 52), (3, 3, 24, 36)])
def test_outputs_equal_onnxruntime_over_http_and_grpc(server, ort_session, shape):
    x = _image(shape, seed=sum(shape))
    expected = ort_session.run(None, {"lr": x})[0]
    g = grpcclient.InferenceServerClient(server.grpc_url)
    h = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
    try:
        via_grpc = _grpc_infer(g, x)
        inp = httpclient.InferInput("lr", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        via_http = h.infer(MODEL, [inp]).as_numpy("sr")
    finally:
        g.close()
        h.close()
    assert via_grpc.shape == via_http.shape == (shape[0], 3, shape[2] * 2, shape[3] * 2)
    np.testing.assert_allclose(via_grpc, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(via_http, expected, rtol=0, atol=1e-6)


@needs_server
def test_concurrent_requests_are_batched(server, ort_session):
    n = 16
    xs = [_image((1, 3, 24, 24), seed=100 + i) for i in range(n)]
    client = grpcclient.InferenceServerClient(server.grpc_url)   # the gRPC client is thread-safe
    try:
        inferences0, executions0 = _stats(client)
        with ThreadPoolExecutor(max_workers=8) as pool:
            outs = list(pool.map(lambda x: _grpc_infer(client, x), xs, timeout=300))
        # Triton records an execution's statistics after sending its responses: wait for the last one.
        deadline = time.monotonic() + 10
        while (stats := _stats(client))[0] - inferences0 < n and time.monotonic() < deadline:
            time.sleep(0.05)
        inferences1, executions1 = stats
    finally:
        client.close()
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, ort_session.run(None, {"lr": x})[0], rtol=0, atol=1e-6)
    inferences, executions = inferences1 - inferences0, executions1 - executions0
    assert inferences == n
    assert executions < inferences, f"{inferences} requests in {executions} executions: no dynamic batches"


@needs_server
def test_bad_requests_get_clear_errors_and_the_server_stays_up(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="(?i)data-type|datatype|FP64"):
            _grpc_infer(client, np.zeros((1, 3, 16, 16), np.float64), dtype="FP64")
        with pytest.raises(InferenceServerException, match="(?i)shape|dims"):
            _grpc_infer(client, np.zeros((3, 16, 16), np.float32))
        with pytest.raises(InferenceServerException, match="(?i)batch"):
            _grpc_infer(client, np.zeros((MAX_BATCH + 1, 3, 16, 16), np.float32))
        bad = np.zeros((1, 3, 16, 16), np.float32)
        bad[0, 1, 2, 3] = np.nan
        with pytest.raises(InferenceServerException, match="NaN"):
            _grpc_infer(client, bad)
        assert client.is_server_live() and client.is_model_ready(MODEL)
        assert _grpc_infer(client, np.zeros((1, 3, 16, 16), np.float32)).shape == (1, 3, 32, 32)
    finally:
        client.close()
    assert server.alive()


@needs_server
def test_metrics_endpoint(server):
    import urllib.request
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    assert f'nv_inference_request_success{{model="{MODEL}",version="1"}}' in text


# --------------------------------------------------------------------------- the app as a client
@needs_server
def test_app_backend_equals_local_onnxruntime_tiling(server, repo):
    import torch

    from app.backends import OrtBackend, load_backend
    from lcoan.tiling import tiled_forward
    remote = load_backend("triton", url=f"{server.grpc_url}/{MODEL}", tile=24, overlap=8)
    local = OrtBackend(str(repo.onnx), device="cpu")
    try:
        assert remote.scale == 2 and remote.name == "triton"
        x = _image((2, 3, 50, 70), seed=7)
        got = remote.infer(x)
        want = tiled_forward(lambda t: torch.from_numpy(local.infer(t.numpy())), torch.from_numpy(x), 2,
                             tile=24, overlap=8).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        small = _image((1, 3, 20, 18), seed=8)   # smaller than a tile: sent whole
        np.testing.assert_allclose(remote.infer(small), local.infer(small), rtol=0, atol=1e-6)
    finally:
        remote.close()


@needs_server
def test_app_cli_frames_in_equal_frames_out_and_match_onnxruntime(server, repo, tmp_path):
    from PIL import Image
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray((_image((40, 56, 3), seed=20 + i) * 255).astype(np.uint8)).save(frames / f"f{i:02d}.png")
    common = ["--tile", "24", "--overlap", "8", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = {"triton": ["--backend", "triton", "--url", server.grpc_url],
            "onnxruntime": ["--model", str(repo.onnx), "--device", "cpu"]}
    for name, extra in runs.items():
        out = subprocess.run([sys.executable, "-m", "app", str(frames), "-o", str(tmp_path / name),
                              "--json", str(tmp_path / f"{name}.json")] + common + extra,
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert summary["frames_in"] == summary["frames_out"] == 3
    a = sorted((tmp_path / "triton").iterdir())
    b = sorted((tmp_path / "onnxruntime").iterdir())
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 3
    for pa, pb in zip(a, b):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb))), pa.name


@needs_server
def test_i420_model_serves_planes_in_the_colours_its_config_names(server, i420_graph):
    """Three uint8 inputs through the Python backend, fed as the graph's types; the app's client
    takes the graph's colours from the config's parameters; results equal local ONNX Runtime."""
    from PIL import Image

    from app.backends import OrtBackend, load_backend
    from app.frames import Colour, yuv_u8
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        wait_until(lambda: client.is_model_ready(I420_MODEL), 60, f"model {I420_MODEL}", alive=server.alive)
        params = {k: v.string_value for k, v in client.get_model_config(I420_MODEL).config.parameters.items()}
    finally:
        client.close()
    assert params["lcoan_io"] == "i420" and (params["lcoan_colorspace"], params["lcoan_range"]) == ("bt601", "full")
    rgb = np.asarray(Image.open(shared_path("data/benchmark/Set5/HR/baby.png")).convert("RGB"))
    colour = Colour("bt601", "full", tagged=True)
    frames = yuv_u8(np.stack([rgb[100:148, 60:124], rgb[300:348, 200:264]]), colour)  # 2 frames, 48 x 64
    remote = load_backend("triton", url=f"{server.grpc_url}/{I420_MODEL}")
    local = OrtBackend(str(i420_graph), device="cpu")
    try:
        assert remote.formats == ("yuv420p",) and remote.graph_colour == ("bt601", "full") and remote.scale == 2
        got, bad = remote.run_u8(frames, "yuv420p", colour)
        want, _ = local.run_u8(frames, "yuv420p", colour)
    finally:
        remote.close()
    assert bad == [] and got.dtype == np.uint8 and got.shape == want.shape == (2, 144, 128)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (diff.max(), (diff == 0).mean())


def test_app_backend_without_server_is_one_line(tmp_path):
    from app.backends import BackendUnavailable, load_backend
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    with pytest.raises(BackendUnavailable, match=f"Triton server at 127.0.0.1:{port}"):
        load_backend("triton", url=f"127.0.0.1:{port}")
    with pytest.raises(BackendUnavailable, match="HOST:PORT"):
        load_backend("triton", url="no-port")


# --------------------------------------------------------------------------- shutdown (last)
@needs_server
def test_zz_server_shuts_down_cleanly_by_pid(server):
    pid, port = server.pid, server.http_port
    assert server.alive()
    t0 = time.monotonic()
    status = server.stop()
    assert status == 0, server.log_tail()
    assert time.monotonic() - t0 < 30
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
