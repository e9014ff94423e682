"""LCoAClusterSort: CPU reference, CUDA kernel compile, TensorRT plugin compile against the 10.3 and
11.1 headers with the export check, the plugin inside a real TensorRT builder (TensorRT-RTX), the
loader's refusals, the workspace check, GPU kernel vs reference, and `make gpu-check` without a GPU.

Needs nvcc (+ cmake for the build tests); GPU tests run only where a CUDA device is visible. The plugin
compile skips only without nvcc/cmake or without the vendored TensorRT headers, and CI
(LCOAN_REQUIRE_PLUGIN_BUILD=1, set by .ci/run) turns a missing header set into a failure.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lcoan.opspec import MAX_CLUSTERS, cluster_sort_reference
from plugins import build as pbuild
from plugins import loader
from plugins.gpu_check import ALL_K, GPU_CASES, all_k_inputs, case_inputs, pattern_inputs
from plugins.gpu_check import tied_ids as _tied_ids
from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
NVCC = pbuild.find_nvcc()
CMAKE = shutil.which("cmake")

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit not installed)")
needs_cmake = pytest.mark.skipif(NVCC is None or CMAKE is None, reason="nvcc and cmake are needed to build plugins/")


def _assert_inverse(perm: np.ndarray, inv: np.ndarray) -> None:
    n = perm.shape[-1]
    ar = np.broadcast_to(np.arange(n, dtype=np.int32), perm.shape)
    np.testing.assert_array_equal(np.take_along_axis(inv, perm.astype(np.int64), axis=-1), ar)
    np.testing.assert_array_equal(np.take_along_axis(perm, inv.astype(np.int64), axis=-1), ar)


# --------------------------------------------------------------------------------------------
# CPU reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 17, 128, 1024])
@pytest.mark.parametrize("n", [1, 2, 31, 1000, 4099])
def test_reference_is_stable_argsort(n: int, k: int) -> None:
    rng = np.random.default_rng(1000 * n + k)
    ids = _tied_ids(rng, 3, n, k)
    perm, inv = cluster_sort_reference(ids, k)
    assert perm.dtype == np.int32 and inv.dtype == np.int32 and perm.shape == ids.shape == inv.shape
    for b in range(ids.shape[0]):
        np.testing.assert_array_equal(perm[b], np.argsort(ids[b], kind="stable"))
    # stability spelled out: keys non-decreasing, positions increasing within equal keys
    keys = np.take_along_axis(ids, perm.astype(np.int64), axis=-1)
    assert np.all(np.diff(keys, axis=-1) >= 0)
    same = np.diff(keys, axis=-1) == 0
    assert np.all(np.diff(perm, axis=-1)[same] > 0)
    _assert_inverse(perm, inv)


def test_reference_matches_torch_stable_sort() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    ids = _tied_ids(rng, 4, 5000, 128)
    perm, _ = cluster_sort_reference(ids, 128)
    _, tperm = torch.sort(torch.from_numpy(ids), dim=-1, stable=True)
    np.testing.assert_array_equal(perm, tperm.numpy().astype(np.int32))


@pytest.mark.parametrize("k", [1, 4, 128, 1024])
def test_reference_clamps_out_of_range(k: int) -> None:
    rng = np.random.default_rng(k)
    ids = _tied_ids(rng, 3, 777, k, out_of_range=True)
    assert (ids < 0).any() and (ids >= k).any()
    perm, inv = cluster_sort_reference(ids, k)
    clipped = np.clip(ids.astype(np.int64), 0, k - 1)
    for b in range(ids.shape[0]):
        np.testing.assert_array_equal(perm[b], np.argsort(clipped[b], kind="stable"))
    _assert_inverse(perm, inv)


def test_reference_shapes_and_errors() -> None:
    perm, inv = cluster_sort_reference(np.array([2, 0, 2, 1], dtype=np.int32), 3)
    np.testing.assert_array_equal(perm, [1, 3, 0, 2])
    np.testing.assert_array_equal(inv, [2, 0, 3, 1])
    perm, inv = cluster_sort_reference(np.zeros((2, 0), dtype=np.int32), 4)
    assert perm.shape == inv.shape == (2, 0)
    with pytest.raises(ValueError):
        cluster_sort_reference(np.zeros((1, 3), dtype=np.int32), 0)
    with pytest.raises(TypeError):
        cluster_sort_reference(np.zeros((1, 3), dtype=np.float32), 4)
    assert MAX_CLUSTERS == 1024


def test_export_does_not_import_plugins() -> None:
    """One-way data flow lcoan -> export -> plugins."""
    for path in (REPO / "export").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert not any(n == "plugins" or n.startswith("plugins.") for n in names), path


def test_missing_tensorrt_root_is_refused_before_cmake(tmp_path: Path, monkeypatch) -> None:
    """A wrong --tensorrt-root must not fall through to the system headers (another TensorRT)."""
    def no_command(*args, **kwargs):
        raise AssertionError("cmake ran")
    monkeypatch.setattr(pbuild.subprocess, "run", no_command)
    missing = tmp_path / "TensorRT-10.3"
    with pytest.raises(pbuild.BuildError, match="no such folder") as info:
        pbuild.build(tensorrt_root=missing, build_dir=tmp_path / "build")
    assert str(info.value).startswith(f"{missing}: ") and "\n" not in str(info.value)
    assert info.value.exit_code == 2 and not (tmp_path / "build").exists()


# --------------------------------------------------------------------------------------------
# Compilation (CI: nvcc present, no GPU)
# --------------------------------------------------------------------------------------------


@needs_nvcc
def test_default_arch_list() -> None:
    archs = pbuild.default_cuda_archs(NVCC)
    known = pbuild.nvcc_known_archs(NVCC)
    for a in (87, 89, 90, 100, 120):
        assert (a in archs) == (a in known), (a, archs)
    flags = pbuild.gencode_flags([87, 90])
    assert flags == ["-gencode", "arch=compute_87,code=sm_87", "-gencode", "arch=compute_90,code=sm_90",
                     "-gencode", "arch=compute_87,code=compute_87"]


@pytest.mark.slow
@needs_nvcc
def test_nvcc_compiles_kernels_for_default_archs(tmp_path: Path) -> None:
    archs = pbuild.default_cuda_archs(NVCC)
    assert archs, "nvcc supports none of the default architectures"
    src = pbuild.CLUSTER_SORT_DIR
    cmd = [NVCC, "-c", "-O3", "-std=c++17", "-Xcompiler", "-fPIC", "-Werror", "all-warnings",
           *pbuild.gencode_flags(archs), str(src / "cluster_sort_kernel.cu"), str(src / "harness.cu")]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "cluster_sort_kernel.o").is_file() and (tmp_path / "harness.o").is_file()
    print(f"nvcc -c for sm_{archs} took {elapsed:.1f}s")


@pytest.mark.slow
@needs_cmake
def test_cmake_builds_kernels_and_harness() -> None:
    res = pbuild.build(harness_only=True)
    assert res.harness is not None and res.harness.is_file()
    assert (res.build_dir / "liblcoan_cluster_sort_kernels.a").is_file()
    lib = loader.harness_library()
    for sym in ("lcoanClusterSort", "lcoanClusterSortWorkspaceSize", "lcoanHarnessClusterSort",
                "lcoanHarnessDeviceCount"):
        assert hasattr(lib, sym), sym


@pytest.mark.slow
@needs_cmake
def test_workspace_size_is_pure_and_monotone() -> None:
    lib = loader.harness_library()
    ws = lambda b, n, k: loader.workspace_size(b, n, k, lib)  # noqa: E731
    assert ws(1, 1, 0) == 0 and ws(1, 1, MAX_CLUSTERS + 1) == 0 and ws(0, 10, 8) == 0 and ws(1, 0, 8) == 0
    assert ws(2, 10**6, 128) == ws(2, 10**6, 128) > 0
    assert ws(1, 4096, 128) <= ws(2, 4096, 128) <= ws(2, 65536, 128) <= ws(2, 65536, 1024)
    assert ws(1, 2048, 128) < ws(1, 2049, 128)  # one more tile
    assert all(ws(b, n, k) % 256 == 0 for b, n, k in [(1, 1, 1), (3, 5000, 7), (2, 10**6, 1024)])


@pytest.mark.slow
def test_kernel_refuses_too_small_workspace_host_side() -> None:
    """lcoanClusterSort checks the workspace before touching any memory: host buffers stand in for
    device ones, one byte short is refused with cudaErrorInvalidValue and nothing is written."""
    if NVCC is None or CMAKE is None:
        pytest.skip("nvcc and cmake are needed to build the kernel harness")
    lib = loader.harness_library()
    b, n, k = 2, 5000, 64
    need = loader.workspace_size(b, n, k, lib)
    assert need == _workspace_bytes(b, n, k)
    ws = (ctypes.c_ubyte * (need + 4096))(*([0xA5] * (need + 4096)))
    ids = (ctypes.c_int32 * (b * n))()
    perm = (ctypes.c_int32 * (b * n))(*([-7] * (b * n)))
    fn = lib.lcoanClusterSort
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    cuda_error_invalid_value = 1
    for short in (need - 1, need // 2, 0):
        rc = fn(ctypes.addressof(ids), ctypes.addressof(perm), ctypes.addressof(perm), b, n, k,
                ctypes.addressof(ws), short, None)
        assert rc == cuda_error_invalid_value, (short, rc)
    assert all(v == 0xA5 for v in ws) and all(v == -7 for v in perm)


# --------------------------------------------------------------------------------------------
# TensorRT plugin libraries: compile against the vendored 10.3 and 11.1 headers (CI)
# --------------------------------------------------------------------------------------------

HEADER_SETS = ("10.3", "11.1")
_REQUIRED = os.environ.get("LCOAN_REQUIRE_PLUGIN_BUILD") == "1"
_built: dict[str, pbuild.BuildResult] = {}


def _workspace_bytes(b: int, n: int, k: int) -> int:
    """The kernel's workspace, written out independently of the C++ (256-byte aligned parts)."""
    align = lambda x: (x + 255) // 256 * 256  # noqa: E731
    tiles = (n + 2047) // 2048
    return align(b * k * tiles * 4) + align(b * k * 4)


def _headers(version: str) -> Path:
    root = SHARED / "vendor" / "tensorrt-headers" / version
    if not (root / "include" / "NvInferRuntime.h").is_file():
        message = f"TensorRT {version} headers not found at {root} (../shared/vendor/tensorrt-headers)"
        if _REQUIRED:
            pytest.fail(message + "; CI (LCOAN_REQUIRE_PLUGIN_BUILD=1) must compile the plugin")
        pytest.skip(message)
    return root


def built_plugins(version: str) -> pbuild.BuildResult:
    """Both plugin libraries + the host test, built once per header set with -Werror for one arch."""
    if NVCC is None or CMAKE is None:
        message = "nvcc and cmake are needed to build the TensorRT plugin libraries"
        if _REQUIRED and NVCC is not None:
            pytest.fail(message)
        pytest.skip(message)
    root = _headers(version)
    if version not in _built:
        arch = pbuild.default_cuda_archs(NVCC)[:1] or [87]
        major = version.split(".")[0]
        t0 = time.monotonic()
        _built[version] = pbuild.build(arch=arch, build_dir=pbuild.DEFAULT_BUILD_DIR / "test" / f"trt{major}",
                                       tensorrt_root=root, werror=True, plugins_only=True)
        print(f"plugin build against TensorRT {version} headers (sm_{arch[0]}): {time.monotonic() - t0:.1f}s")
    return _built[version]


def _dynamic_symbols(lib: Path) -> set[str]:
    """Defined dynamic symbols (nm -D, or readelf --dyn-syms where nm is missing)."""
    nm = shutil.which("nm")
    if nm:
        out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
        return {line.split()[-1] for line in out.splitlines() if line.strip() and line.split()[-2] not in ("A",)}
    readelf = shutil.which("readelf")
    assert readelf, "neither nm nor readelf is installed"
    out = subprocess.run([readelf, "-W", "--dyn-syms", str(lib)], capture_output=True, text=True, check=True).stdout
    syms = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[0].endswith(":") and cols[6] != "UND" and cols[3] in ("FUNC", "OBJECT"):
            syms.add(cols[7].split("@")[0])
    return syms


@pytest.mark.slow
@pytest.mark.parametrize("version", HEADER_SETS)
def test_plugin_libraries_compile_and_export_only_entry_points(version: str) -> None:
    from engine.trt import plugin_build_info

    res = built_plugins(version)
    major = int(version.split(".")[0])
    assert res.tensorrt_version == f"{version}.0"
    assert res.plugin is not None and res.plugin.name == f"liblcoan_plugins_trt{major}.so"
    assert res.plugin_static is not None and res.plugin_static.name == f"liblcoan_plugins_static_trt{major}.so"
    # dynamic registration: exactly the two entry points, none of our internals, no cudart
    assert _dynamic_symbols(res.plugin) == {"getCreators", "setLoggerFinder"}
    # static registration: nothing exported; it registers itself from a static initialiser
    assert _dynamic_symbols(res.plugin_static) == set()
    for lib, registration in ((res.plugin, "dynamic"), (res.plugin_static, "static")):
        info = plugin_build_info(lib)
        assert info is not None and (info.tensorrt_version, info.major, info.registration) == \
            (f"{version}.0", major, registration)
    needed = subprocess.run(["readelf", "-d", str(res.plugin)], capture_output=True, text=True).stdout
    assert "libnvinfer" not in needed and "libtensorrt" not in needed and "libcudart" not in needed


@pytest.mark.slow
def test_plugin_sources_compile_without_warnings_and_headers_are_system() -> None:
    """-Wall -Wextra -Werror on our sources while TensorRT's own headers stay SYSTEM (10.3's carry
    deprecated declarations that would otherwise warn)."""
    res = built_plugins("10.3")
    flags = (res.build_dir / "CMakeFiles" / "lcoan_plugins.dir" / "flags.make").read_text()
    assert re.search(r"CXX_FLAGS = .*-Wall -Wextra -Werror", flags), flags
    assert "-isystem" in flags and "tensorrt-headers/10.3/include" in flags.split("-isystem", 1)[1], flags


@pytest.mark.slow
@pytest.mark.parametrize("version", HEADER_SETS)
def test_plugin_host_lifecycle_and_workspace(version: str) -> None:
    """Host-side, no GPU and no TensorRT library: dlopen + getCreators, bad num_clusters refused with a
    message, workspace recorded and serialized, and a shape above the profile's max reported as a
    too-small workspace before anything is written."""
    res = built_plugins(version)
    assert res.host_test is not None
    proc = subprocess.run([str(res.host_test), str(res.plugin)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert out["getCreators"] == out["setLoggerFinder"] == "found" and out["creators"] == "1"
    assert out["plugin"] == "lcoan::LCoAClusterSort/1"
    for case, message in (("zero", "must be an int in [1, 1024], got 0"),
                          ("above_max", "must be an int in [1, 1024], got 1025"),
                          ("missing", "attribute num_clusters is missing"),
                          ("float", "num_clusters must be an int, got a float32")):
        assert out[f"create_{case}"] == "null", case
        assert message in out[f"create_{case}_error"], (case, out[f"create_{case}_error"])
    assert out["create_ok"] == "plugin" and out["create_ok_error"] == ""
    reserved = _workspace_bytes(1, 4096, 64)
    assert int(out["workspace_reserved"]) == reserved
    assert int(out["serialized_num_clusters"]) == 64 and int(out["serialized_workspace_bytes"]) == reserved
    assert out["enqueue_too_small"] == "-1"
    assert (f"workspace too small for ids [1, 8192]: needs {_workspace_bytes(1, 8192, 64)} bytes, "
            f"TensorRT reserved {reserved}") in out["enqueue_too_small_error"]
    assert out["buffers_untouched"] == "yes" and out["done"] == "1"


# --------------------------------------------------------------------------------------------
# The plugin inside a real TensorRT builder (TensorRT-RTX 1.7, CPU-only), in fresh processes
# --------------------------------------------------------------------------------------------

RTX_PROFILE = ("1x3x16x16", "1x3x32x32", "1x3x64x80")  # max 64*80 = 5120 positions > TopK's 3840


def _rtx():
    from engine import trt as trt_mod

    try:
        trt = trt_mod.import_trt()
    except trt_mod.TrtNotInstalled as exc:
        pytest.skip(f"no TensorRT: {exc}")
    if trt_mod.flavour(trt) != "tensorrt_rtx":
        pytest.skip("these checks are for TensorRT-RTX's CPU-only builder; a full TensorRT runs them on a GPU")
    return trt_mod, trt


def _env(cache: Path, link_dir: Path | None = None) -> dict:
    """A child environment; ``link_dir`` (the project's libtensorrt_rtx.so folder) goes on
    LD_LIBRARY_PATH, otherwise any such folder is removed from it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["LCOAN_CACHE"] = str(cache)
    env.pop("LCOAN_RTX_LIB_REEXEC", None)
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
             if p and not (Path(p) / "libtensorrt_rtx.so").exists()]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(([str(link_dir)] if link_dir else []) + paths)
    return env


def _run_py(code: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)
    assert proc.returncode not in (-6, 134, -11, 139), f"process aborted ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.trt
def test_rtx_builds_bundled_plugin_graph_with_the_plugin(tmp_path: Path, monkeypatch) -> None:
    trt_mod, trt = _rtx()
    lib = built_plugins("11.1").plugin
    monkeypatch.setenv("LCOAN_CACHE", str(tmp_path / "cache"))  # where the link folder is made
    link_dir = trt_mod.rtx_library_dir(trt)
    code = f"""
        import json, onnx
        from export.to_onnx import export_onnx, load_weights
        from engine.build import build_engine, make_profile
        graph = export_onnx(load_weights(None, None), {str(tmp_path / 'edge_plugin.onnx')!r}, sort="plugin")
        nodes = [n for n in onnx.load(str(graph)).graph.node if n.op_type == "LCoAClusterSort"]
        k = [a.i for a in nodes[0].attribute if a.name == "num_clusters"][0]
        res = build_engine(graph, {str(tmp_path / 'edge_plugin.engine')!r}, precision="fp32",
                           profile=make_profile(*{RTX_PROFILE!r}), plugins={str(lib)!r}, opt_level=0,
                           log=lambda _m: None)
        print(json.dumps({{"nodes": len(nodes), "k": k, "engine": str(res.engine), "sidecar": res.sidecar}}))
    """
    proc = _run_py(code, _env(tmp_path / "cache", link_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 1
    types = result["sidecar"]["network"]["layer_types"]
    plugin_layers = {t: c for t, c in types.items() if "PLUGIN" in t}
    assert plugin_layers == {"PLUGIN_V3": 1}, types
    data = Path(result["engine"]).read_bytes()
    for token in (b"LCoAClusterSort", b"lcoan", b"num_clusters", b"workspace_bytes"):
        assert token in data, token
    # the fields the runtime plugin is recreated from: num_clusters (int32) and the workspace the
    # builder reserved for the profile's max shape (int64), right after their names
    k = result["k"]
    at = data.index(b"num_clusters")
    assert struct.pack("<i", k) in data[at:at + 120]
    at = data.index(b"workspace_bytes")
    assert struct.pack("<q", _workspace_bytes(1, 64 * 80, k)) in data[at:at + 120]


@pytest.mark.slow
@pytest.mark.trt
def test_rtx_creator_rejects_bad_num_clusters(tmp_path: Path, monkeypatch) -> None:
    """Each bad attribute is a parser error with the creator's message; the process does not abort."""
    trt_mod, trt = _rtx()
    lib = built_plugins("11.1").plugin
    monkeypatch.setenv("LCOAN_CACHE", str(tmp_path / "cache"))
    link_dir = trt_mod.rtx_library_dir(trt)
    code = f"""
        import json
        import onnx
        from onnx import TensorProto, helper
        from engine.build import load_plugins, make_logger
        from engine.trt import import_trt
        trt = import_trt()
        load_plugins(trt, {str(lib)!r})
        cases = {{"zero": {{"num_clusters": 0}}, "above_max": {{"num_clusters": 1025}}, "missing": {{}},
                 "float": {{"num_clusters": 64.0}}, "ok": {{"num_clusters": 64}}}}
        out = {{}}
        logger = make_logger(trt)  # outlives every builder, network and parser below
        for name, attrs in cases.items():
            node = helper.make_node("LCoAClusterSort", ["ids"], ["perm", "inv"], domain="lcoan",
                                    plugin_version="1", plugin_namespace="lcoan", **attrs)
            graph = helper.make_graph([node], name, [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 5000])],
                                      [helper.make_tensor_value_info(o, TensorProto.INT32, [1, 5000])
                                       for o in ("perm", "inv")])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                            helper.make_opsetid("lcoan", 1)])
            logger.messages.clear()
            builder = trt.Builder(logger)
            network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            parser = trt.OnnxParser(network, logger)
            ok = parser.parse(model.SerializeToString())
            layers = [str(network.get_layer(i).type) for i in range(network.num_layers)]
            out[name] = {{"parsed": bool(ok), "layers": layers,
                         "log": [m for _l, m in logger.messages if "LCoAClusterSort" in m],
                         "errors": [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]}}
            del parser, network, builder  # TensorRT's order: the parser, then the network, then the builder
        print(json.dumps(out))
    """
    proc = _run_py(code, _env(tmp_path / "cache", link_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"zero": "must be an int in [1, 1024], got 0", "above_max": "must be an int in [1, 1024], got 1025",
                "missing": "attribute num_clusters is missing", "float": "num_clusters must be an int, got a float"}
    for case, message in expected.items():
        assert not out[case]["parsed"] and out[case]["errors"], (case, out[case])
        assert any(message in m for m in out[case]["log"] + [proc.stderr]), (case, out[case], proc.stderr[-2000:])
    assert out["ok"]["parsed"] and out["ok"]["layers"] == ["LayerType.PLUGIN_V3"], out["ok"]


@pytest.mark.slow
@pytest.mark.trt
def test_rtx_cli_end_to_end_restarts_with_the_library_link(tmp_path: Path) -> None:
    """`python -m export.to_trt --fp16 --sort plugin --plugins LIB` with nothing prepared: the CLI
    makes the libtensorrt_rtx.so link in its cache, restarts itself once with it on LD_LIBRARY_PATH,
    and builds."""
    _rtx()
    lib = built_plugins("11.1").plugin
    out = tmp_path / "e2e.engine"
    cmd = [sys.executable, "-m", "export.to_trt", "--fp16", "--sort", "plugin", "--plugins", str(lib),
           "--min", RTX_PROFILE[0], "--opt", RTX_PROFILE[1], "--max", RTX_PROFILE[2], "--out", str(out),
           "--opt-level", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "cache"), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "cache" / "lib").is_dir()  # the link folder the restart used
    side = json.loads((tmp_path / "e2e.engine.json").read_text())
    assert side["precision"] == "fp16" and side["sort"] == "plugin"
    assert side["network"]["layer_types"].get("PLUGIN_V3") == 1
    assert b"LCoAClusterSort" in out.read_bytes()


@pytest.mark.slow
@pytest.mark.trt
def test_rtx_library_call_without_link_is_one_line_not_an_abort(tmp_path: Path) -> None:
    """A library caller cannot be restarted: it gets one line saying exactly what to run."""
    _rtx()
    lib = built_plugins("11.1").plugin
    code = f"""
        from export.errors import run_cli
        from engine.build import load_plugins
        from engine.trt import import_trt
        run_cli(lambda _a: load_plugins(import_trt(), {str(lib)!r}))
    """
    proc = _run_py(code, _env(tmp_path / "cache"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    folder = next((tmp_path / "cache" / "lib").iterdir())
    assert f"LD_LIBRARY_PATH={folder}:$LD_LIBRARY_PATH" in lines[0]
    assert os.readlink(folder / "libtensorrt_rtx.so").endswith("libtensorrt_rtx.so.1")


@pytest.mark.slow
@pytest.mark.trt
def test_rtx_static_library_registers_itself_when_loaded(tmp_path: Path) -> None:
    _rtx()
    static = built_plugins("11.1").plugin_static
    code = f"""
        import ctypes
        import tensorrt_rtx as trt
        registry = trt.get_plugin_registry()
        before = registry.get_creator("LCoAClusterSort", "1", "lcoan")
        ctypes.CDLL({str(static)!r})  # what Polygraphy --plugins and trtexec --staticPlugins do
        after = registry.get_creator("LCoAClusterSort", "1", "lcoan")
        print(before is None, after is not None, after.plugin_namespace if after else None)
    """
    proc = _run_py(code, _env(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True", "lcoan"], proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_loader_refuses_library_built_for_another_major(tmp_path: Path, static: bool) -> None:
    """A 10.3 build offered to TensorRT-RTX (TensorRT 11 plugin ABI; the static one segfaults there) is
    refused in one line before TensorRT loads it, by the one plugin loader."""
    _rtx()
    res = built_plugins("10.3")
    lib = res.plugin_static if static else res.plugin
    code = f"""
        import sys
        from export.errors import run_cli
        from engine.build import load_plugins
        from engine.trt import import_trt
        trt = import_trt()
        run_cli(lambda _a: load_plugins(trt, {str(lib)!r}))
    """
    proc = _run_py(code, _env(tmp_path / "cache"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    expected = "was compiled against TensorRT 10.3.0 headers but this process runs tensorrt_rtx"
    assert expected in lines[0] and "build one for TensorRT 11" in lines[0]


def test_make_gpu_check_without_gpu_is_a_clean_skip() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no device visible, GPU or not
    proc = subprocess.run([make, "-s", "gpu-check"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu-check: no CUDA GPU visible" in proc.stdout and "nothing to run" in proc.stdout
    assert "gpu_fps: no CUDA GPU visible" in proc.stdout  # the second half, benchmarks/gpu_fps.py
    assert "benchmarks.app --gpu: no CUDA GPU visible" in proc.stdout  # the app against its model
    assert "gpu tests: no CUDA torch and pytest" in proc.stdout  # pytest -m gpu, last


# --------------------------------------------------------------------------------------------
# GPU: kernel vs CPU reference
# --------------------------------------------------------------------------------------------

_NO_GPU_REASON = "no CUDA device visible (CUDA driver reports none); GPU kernel tests need a GPU"


@pytest.fixture(scope="module")
def gpu_harness():
    if NVCC is None or CMAKE is None:
        pytest.skip("nvcc and cmake are needed to build the kernel harness")
    if loader.cuda_device_count() == 0:
        pytest.skip(_NO_GPU_REASON)
    lib = loader.harness_library()
    if loader.harness_device_count(lib) == 0:
        pytest.skip(_NO_GPU_REASON + " (cudaGetDeviceCount)")
    return lib


@pytest.mark.parametrize("b,n,k", GPU_CASES)
@pytest.mark.gpu
def test_gpu_kernel_matches_reference(gpu_harness, b: int, n: int, k: int) -> None:
    ids = case_inputs(b, n, k)
    perm, inv, _ = loader.cluster_sort_gpu(ids, k, lib=gpu_harness)
    ref_perm, ref_inv = cluster_sort_reference(ids, k)
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(inv, ref_inv)


@pytest.mark.parametrize("k", ALL_K)
@pytest.mark.gpu
def test_gpu_kernel_all_k(gpu_harness, k: int) -> None:
    ids = all_k_inputs(k)  # uniform + out of range
    perm, inv, _ = loader.cluster_sort_gpu(ids, k, lib=gpu_harness)
    ref_perm, ref_inv = cluster_sort_reference(ids, k)
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(inv, ref_inv)


@pytest.mark.gpu
def test_gpu_kernel_patterns_and_errors(gpu_harness) -> None:
    for ids in pattern_inputs().values():
        perm, inv, _ = loader.cluster_sort_gpu(ids, 128, lib=gpu_harness)
        ref_perm, ref_inv = cluster_sort_reference(ids, 128)
        np.testing.assert_array_equal(perm, ref_perm)
        np.testing.assert_array_equal(inv, ref_inv)
    ids = _tied_ids(np.random.default_rng(0), 2, 50_000, 128)
    a = loader.cluster_sort_gpu(ids, 128, lib=gpu_harness)
    b = loader.cluster_sort_gpu(ids, 128, timing_iters=3, lib=gpu_harness)
    np.testing.assert_array_equal(a[0], b[0])  # deterministic
    assert b[2] > 0.0
    for bad_k in (0, MAX_CLUSTERS + 1):
        with pytest.raises(RuntimeError):
            loader.cluster_sort_gpu(ids, bad_k, lib=gpu_harness)
