"""LCoAClusterSort: CPU reference, CUDA kernel compile, TensorRT plugin compile, GPU kernel vs reference.

Needs nvcc (+ cmake for the build tests); GPU tests run only where a CUDA device is visible, the plugin
compile only where the TensorRT headers are found. Every skip says why.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from export.sort_reference import MAX_CLUSTERS, cluster_sort_reference
from plugins import build as pbuild
from plugins import loader

REPO = Path(__file__).resolve().parents[1]
NVCC = pbuild.find_nvcc()
CMAKE = shutil.which("cmake")

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit not installed)")
needs_cmake = pytest.mark.skipif(NVCC is None or CMAKE is None, reason="nvcc and cmake are needed to build plugins/")


def _tied_ids(rng: np.random.Generator, batch: int, n: int, k: int, out_of_range: bool = False) -> np.ndarray:
    """Random ids with heavy ties: each row draws from a handful of distinct clusters."""
    rows = []
    for _ in range(batch):
        distinct = rng.choice(k, size=min(k, int(rng.integers(1, 9))), replace=False)
        rows.append(rng.choice(distinct, size=n))
    ids = np.stack(rows).astype(np.int32)
    if out_of_range and n > 0:
        mask = rng.random(ids.shape) < 0.1
        bad = rng.choice(np.array([-1, -7, k, k + 5, np.iinfo(np.int32).min, np.iinfo(np.int32).max],
                                  dtype=np.int64), size=ids.shape)
        ids = np.where(mask, bad, ids).astype(np.int32)
    return ids


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


@needs_cmake
def test_cmake_builds_kernels_and_harness() -> None:
    res = pbuild.build(harness_only=True)
    assert res.harness is not None and res.harness.is_file()
    assert (res.build_dir / "liblcoan_cluster_sort_kernels.a").is_file()
    lib = loader.harness_library()
    for sym in ("lcoanClusterSort", "lcoanClusterSortWorkspaceSize", "lcoanHarnessClusterSort",
                "lcoanHarnessDeviceCount"):
        assert hasattr(lib, sym), sym


@needs_cmake
def test_workspace_size_is_pure_and_monotone() -> None:
    lib = loader.harness_library()
    ws = lambda b, n, k: loader.workspace_size(b, n, k, lib)  # noqa: E731
    assert ws(1, 1, 0) == 0 and ws(1, 1, MAX_CLUSTERS + 1) == 0 and ws(0, 10, 8) == 0 and ws(1, 0, 8) == 0
    assert ws(2, 10**6, 128) == ws(2, 10**6, 128) > 0
    assert ws(1, 4096, 128) <= ws(2, 4096, 128) <= ws(2, 65536, 128) <= ws(2, 65536, 1024)
    assert ws(1, 2048, 128) < ws(1, 2049, 128)  # one more tile
    assert all(ws(b, n, k) % 256 == 0 for b, n, k in [(1, 1, 1), (3, 5000, 7), (2, 10**6, 1024)])


@needs_cmake
def test_tensorrt_plugin_compiles(tmp_path: Path) -> None:
    inc = pbuild.find_tensorrt_include()
    if inc is None:
        pytest.skip("TensorRT headers (NvInferRuntime.h) not found: set TENSORRT_ROOT to compile the plugin")
    arch = pbuild.default_cuda_archs(NVCC)[:1] or [87]
    res = pbuild.build(arch=arch, build_dir=tmp_path / "build", tensorrt_root=os.environ.get("TENSORRT_ROOT"))
    assert res.plugin is not None and res.plugin_static is not None, "plugin targets were not configured"
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, "-D", "--defined-only", str(res.plugin)], capture_output=True, text=True).stdout
        assert "getCreators" in syms and "setLoggerFinder" in syms
        ssyms = subprocess.run([nm, "-D", "--defined-only", str(res.plugin_static)],
                               capture_output=True, text=True).stdout
        assert "getCreators" not in ssyms  # static variant registers itself instead


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


GPU_CASES = [
    # (B, N, K)
    (1, 1, 1),
    (3, 1, 128),
    (2, 31, 2),
    (2, 2047, 128),
    (2, 2048, 128),
    (2, 2049, 128),
    (4, 4096, 1),
    (3, 65536, 128),
    (2, 100_003, 1024),
    (1, 250_000, 3),
    (2, 1_000_000, 128),
    (1, 1_000_000, 1024),
    (70_000, 3, 5),  # more rows than one launch's grid.y (65535)
]


@pytest.mark.parametrize("b,n,k", GPU_CASES)
def test_gpu_kernel_matches_reference(gpu_harness, b: int, n: int, k: int) -> None:
    rng = np.random.default_rng(b * 1_000_003 + n * 31 + k)
    ids = _tied_ids(rng, b, n, k, out_of_range=True)
    perm, inv, _ = loader.cluster_sort_gpu(ids, k, lib=gpu_harness)
    ref_perm, ref_inv = cluster_sort_reference(ids, k)
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(inv, ref_inv)


@pytest.mark.parametrize("k", [1, 2, 5, 64, 128, 513, 1024])
def test_gpu_kernel_all_k(gpu_harness, k: int) -> None:
    rng = np.random.default_rng(k)
    ids = rng.integers(-3, k + 3, size=(3, 20_000), dtype=np.int32)  # uniform + out of range
    perm, inv, _ = loader.cluster_sort_gpu(ids, k, lib=gpu_harness)
    ref_perm, ref_inv = cluster_sort_reference(ids, k)
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(inv, ref_inv)


def test_gpu_kernel_patterns_and_errors(gpu_harness) -> None:
    n = 9000
    for ids in (np.zeros((2, n), np.int32), np.tile(np.arange(n, dtype=np.int32) % 128, (2, 1)),
                np.tile(np.arange(n, dtype=np.int32)[::-1] % 128, (2, 1))):
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
