"""Load the compiled CUDA harness (ctypes) and the TensorRT plugin library.

* :func:`harness_library` - ``liblcoan_cluster_sort_harness.so`` (kernels only, no TensorRT), built on
  demand; :func:`cluster_sort_gpu` runs the LCoAClusterSort kernel on numpy arrays through it.
* :func:`cuda_device_count` - number of CUDA devices, without building anything (driver API via ctypes).
* :func:`plugin_library_path` / :func:`load_plugin_library` - register the ``lcoan::LCoAClusterSort``
  TensorRT plugin with a ``tensorrt`` module's plugin registry.

Data flows lcoan -> export -> plugins: this package may import ``export``; ``export`` never imports it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from plugins import build as _build

PLUGIN_NAME = "LCoAClusterSort"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "lcoan"

_HARNESS_OUT_OF_BOUNDS = -2


class PluginLibraryError(RuntimeError):
    """A native library is missing or could not be loaded (message is one line)."""


# --------------------------------------------------------------------------------------------
# CUDA availability (driver API, no build needed)
# --------------------------------------------------------------------------------------------


def cuda_device_count() -> int:
    """CUDA devices visible through the driver (0 if there is no driver or no GPU)."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        if cuda.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


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


def plugin_library_path(static: bool = False, build_dir: str | os.PathLike | None = None,
                        major: int | None = None) -> Path:
    """Path of ``liblcoan_plugins_trt<major>.so`` (getCreators) or, with ``static``,
    ``liblcoan_plugins_static_trt<major>.so``; ``major`` defaults to the plugin ABI of the installed
    TensorRT (11 for TensorRT-RTX 1.x).

    ``$LCOAN_PLUGIN_LIB`` (resp. ``$LCOAN_PLUGIN_STATIC_LIB``) overrides the build-tree location, e.g. for a
    library built on the Jetson itself.
    """
    env = os.environ.get("LCOAN_PLUGIN_STATIC_LIB" if static else "LCOAN_PLUGIN_LIB")
    if env:
        return Path(env)
    if major is None:
        from export.trt import plugin_abi_major
        major = plugin_abi_major()
    bdir = Path(build_dir) if build_dir else _build.DEFAULT_BUILD_DIR / f"trt{major}"
    return bdir / _build.plugin_lib_name(major, static)


def _creator_registered(registry) -> bool:
    for getter in ("get_creator", "get_plugin_creator"):
        fn = getattr(registry, getter, None)
        if fn is None:
            continue
        try:
            if fn(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None:
                return True
        except Exception:  # noqa: BLE001 - older bindings raise on unknown creators
            pass
    return False


def load_plugin_library(trt_module, path: str | os.PathLike | None = None):
    """Register lcoan::LCoAClusterSort with ``trt_module``'s plugin registry; returns the library handle.

    Uses ``registry.load_library`` (TensorRT >= 8.6; registers through ``getCreators``) and falls back to
    ``ctypes.CDLL`` on the self-registering static library for bindings without it (or when ``path`` is
    that library). A library built for another TensorRT major is refused in one line before TensorRT
    loads it, and so is TensorRT-RTX without ``libtensorrt_rtx.so`` on the library path (its parser
    would abort the process). Idempotent: returns None when the creator is already registered.
    """
    from export.errors import ExportError
    from export.trt import check_plugin_library, plugin_abi_major, require_rtx_plugins_ready

    registry = trt_module.get_plugin_registry()
    if _creator_registered(registry):
        return None
    use_registry = hasattr(registry, "load_library")
    lib_path = Path(path) if path else plugin_library_path(static=not use_registry,
                                                           major=plugin_abi_major(trt_module))
    if not lib_path.is_file():
        raise PluginLibraryError(
            f"TensorRT plugin library {lib_path} is missing; build it with `python -m plugins.build` "
            "(needs the TensorRT headers: set TENSORRT_ROOT)")
    try:
        built = check_plugin_library(trt_module, lib_path)
    except ExportError as e:
        raise PluginLibraryError(str(e)) from None
    if use_registry and (built is None or built.registration == "dynamic"):
        try:
            handle = registry.load_library(str(lib_path))
        except Exception as e:  # noqa: BLE001 - binding raises various types
            raise PluginLibraryError(f"TensorRT could not load plugin library {lib_path}: {e}") from e
        if handle is None:
            raise PluginLibraryError(f"TensorRT could not load plugin library {lib_path} (see TensorRT log)")
    else:
        try:
            handle = ctypes.CDLL(str(lib_path), mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise PluginLibraryError(f"could not load plugin library {lib_path}: {e}") from e
    try:
        require_rtx_plugins_ready(trt_module)
    except ExportError as e:
        raise PluginLibraryError(str(e)) from None
    return handle
