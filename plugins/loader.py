"""Load the compiled CUDA harness (ctypes) and the TensorRT plugin library.

* :func:`harness_library` - ``liblcoan_cluster_sort_harness.so`` (kernels only, no TensorRT), built on
  demand; :func:`cluster_sort_gpu` runs the LCoAClusterSort kernel on numpy arrays through it.
* :func:`cuda_devices` / :func:`cuda_device_count` - the CUDA devices (name, compute capability), without
  building anything (driver API via ctypes; ``make gpu-check`` uses it too).
* :func:`plugin_library_path` - where ``python -m plugins.build`` puts the TensorRT plugin libraries.
  Registering one with TensorRT is the engine's job (``engine.build.load_plugins``), in one place.

This package sits beside ``app``, above ``engine`` (it reads ``engine.trt``'s plugin ABI); no stage imports
it (pyproject.toml's import-linter contracts).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from plugins import build as _build
from lcoan.errors import LcoanError

_HARNESS_OUT_OF_BOUNDS = -2


class PluginLibraryError(LcoanError, RuntimeError):
    """A native library is missing or could not be loaded (message is one line)."""


# --------------------------------------------------------------------------------------------
# CUDA availability (driver API, no build needed)
# --------------------------------------------------------------------------------------------


def cuda_devices() -> list[dict]:
    """Name and compute capability of each visible CUDA device; [] without a driver or a GPU."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        if cuda.cuInit(0) != 0:
            return []
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return []
        devices = []
        for i in range(count.value):
            dev = ctypes.c_int(0)
            if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0:
                continue
            buf = ctypes.create_string_buffer(256)
            cuda.cuDeviceGetName(buf, 256, dev)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
            cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
            devices.append({"name": buf.value.decode(errors="replace").strip(), "cc": f"{major.value}.{minor.value}",
                            "sm": major.value * 10 + minor.value})
        return devices
    return []


def cuda_device_count() -> int:
    """CUDA devices visible through the driver (0 if there is no driver or no GPU)."""
    return len(cuda_devices())


# --------------------------------------------------------------------------------------------
# ctypes harness
# --------------------------------------------------------------------------------------------

_harness: ctypes.CDLL | None = None


def harness_library(build_if_needed: bool = True, build_dir: str | os.PathLike | None = None) -> ctypes.CDLL:
    """Load the harness library, (re)building it first when it is missing or older than its sources."""
    global _harness
    if _harness is not None and build_dir is None:
        return _harness
    bdir = Path(build_dir) if build_dir else _build.DEFAULT_BUILD_DIR
    path = bdir / _build.HARNESS_LIB
    if build_if_needed and _build.harness_is_stale(bdir):
        try:
            _build.build(harness_only=True, build_dir=bdir)
        except _build.BuildError as e:
            first = str(e).splitlines()[0]
            raise PluginLibraryError(f"could not build {path.name}: {first}") from e
    if not path.is_file():
        raise PluginLibraryError(f"{path} is missing; run `python -m plugins.build --harness-only`")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise PluginLibraryError(f"could not load {path}: {e}") from e

    i32p = ctypes.POINTER(ctypes.c_int32)
    lib.lcoanHarnessDeviceCount.argtypes = [ctypes.POINTER(ctypes.c_int)]
    lib.lcoanHarnessDeviceCount.restype = ctypes.c_int
    lib.lcoanHarnessDeviceName.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.lcoanHarnessDeviceName.restype = ctypes.c_int
    lib.lcoanHarnessErrorString.argtypes = [ctypes.c_int]
    lib.lcoanHarnessErrorString.restype = ctypes.c_char_p
    lib.lcoanHarnessWorkspaceSize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.lcoanHarnessWorkspaceSize.restype = ctypes.c_size_t
    lib.lcoanHarnessClusterSort.argtypes = [i32p, i32p, i32p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    lib.lcoanHarnessClusterSort.restype = ctypes.c_int
    if build_dir is None:
        _harness = lib
    return lib


def harness_device_count(lib: ctypes.CDLL | None = None) -> int:
    """cudaGetDeviceCount through the harness (0 when the runtime reports an error)."""
    lib = lib or harness_library()
    count = ctypes.c_int(0)
    return count.value if lib.lcoanHarnessDeviceCount(ctypes.byref(count)) == 0 else 0


def harness_device_name(lib: ctypes.CDLL | None = None) -> str:
    lib = lib or harness_library()
    buf = ctypes.create_string_buffer(256)
    lib.lcoanHarnessDeviceName(buf, len(buf))
    return buf.value.decode(errors="replace")


def workspace_size(batch: int, n: int, num_clusters: int, lib: ctypes.CDLL | None = None) -> int:
    lib = lib or harness_library()
    return int(lib.lcoanHarnessWorkspaceSize(batch, n, num_clusters))


def cluster_sort_gpu(ids: np.ndarray, num_clusters: int, timing_iters: int = 0,
                     lib: ctypes.CDLL | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Run the CUDA kernel on ``ids`` ([B, N] or [N]); returns ``(perm, inv, ms_per_sort)``.

    ``ms_per_sort`` is the mean kernel time over ``timing_iters`` extra launches (0.0 if not timed).
    """
    lib = lib or harness_library()
    ids = np.asarray(ids)
    shape = ids.shape
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape [B, N] or [N], got {shape}")
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    batch, n = ids.shape
    perm = np.empty_like(ids)
    inv = np.empty_like(ids)
    ms = ctypes.c_float(0.0)
    i32p = ctypes.POINTER(ctypes.c_int32)
    rc = lib.lcoanHarnessClusterSort(ids.ctypes.data_as(i32p), perm.ctypes.data_as(i32p), inv.ctypes.data_as(i32p),
                                     batch, n, int(num_clusters), int(timing_iters), ctypes.byref(ms))
    if rc != 0:
        msg = lib.lcoanHarnessErrorString(rc).decode(errors="replace")
        raise RuntimeError(f"lcoanClusterSort(B={batch}, N={n}, K={num_clusters}) failed: {msg} ({rc})")
    return perm.reshape(shape), inv.reshape(shape), float(ms.value)


# --------------------------------------------------------------------------------------------
# TensorRT plugin library
# --------------------------------------------------------------------------------------------


def plugin_library_path(major: int, static: bool = False, build_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``liblcoan_plugins_trt<major>.so`` (getCreators) or, with ``static``,
    ``liblcoan_plugins_static_trt<major>.so``. ``major`` is the TensorRT plugin ABI the library is for
    (``engine.trt.plugin_abi_major()`` gives the installed runtime's: 11 for TensorRT-RTX 1.x); the
    caller asks, because this package sits below the TensorRT stage and imports nothing of it.

    ``$LCOAN_PLUGIN_LIB`` (resp. ``$LCOAN_PLUGIN_STATIC_LIB``) overrides the build-tree location, e.g. for a
    library built on the Jetson itself.
    """
    env = os.environ.get("LCOAN_PLUGIN_STATIC_LIB" if static else "LCOAN_PLUGIN_LIB")
    if env:
        return Path(env)
    bdir = Path(build_dir) if build_dir else _build.DEFAULT_BUILD_DIR / f"trt{major}"
    return bdir / _build.plugin_lib_name(major, static)
