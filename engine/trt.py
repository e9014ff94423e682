"""The one import point for TensorRT: ``tensorrt`` (TensorRT 10.x / 11.x, JetPack), else
``tensorrt_rtx`` (TensorRT for RTX, ``pip install tensorrt-rtx-cu13``).

    from engine.trt import import_trt, trt_info, device_info
    trt = import_trt()          # the module, or a one-line TrtNotInstalled error
    info = trt_info()           # flavour, version and what this API offers
    device = device_info()      # GPU name + compute capability, or "cpu-build"

``LCOAN_TRT=tensorrt`` or ``LCOAN_TRT=tensorrt_rtx`` picks one flavour when both are installed.

Facts this module encodes (checked with TensorRT-RTX 1.7.1 and the TensorRT 10/11 API docs):

* TensorRT 11 and TensorRT-RTX have no FP16/INT8 builder flags; precision lives in the ONNX
  graph (FP16 tensors, Q/DQ nodes) and the network is created ``STRONGLY_TYPED``. TensorRT 10.x
  has ``STRONGLY_TYPED`` too (since 9.x), so one code path serves 10.3 .. 11.x and RTX 1.x.
* TensorRT-RTX builds and serialises engines without a GPU ("legacy CPU-only mode"); it runs
  them only on compute capability 7.5 / 8.x / 12.x. Its timing-cache calls are deprecated no-ops.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from .errors import EngineError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
CPU_BUILD = "cpu-build"
INSTALL_HINT = ("install TensorRT: `pip install tensorrt-rtx-cu13` (TensorRT for RTX; builds engines "
                "on any machine) or, on Jetson, JetPack's TensorRT (`sudo apt install "
                "python3-libnvinfer`; JetPack 6 ships TensorRT 10.3)")


class TrtNotInstalled(EngineError):
    """Neither ``tensorrt`` nor ``tensorrt_rtx`` can be imported."""


_module: ModuleType | None = None


def _candidates() -> tuple[str, ...]:
    wanted = os.environ.get("LCOAN_TRT", "").strip()
    if wanted:
        if wanted not in FLAVOURS:
            raise EngineError(f"LCOAN_TRT={wanted!r}: expected one of {', '.join(FLAVOURS)}")
        return (wanted,)
    return FLAVOURS


def import_trt() -> ModuleType:
    """``tensorrt`` if importable, else ``tensorrt_rtx``; else :class:`TrtNotInstalled`."""
    global _module
    if _module is not None:
        return _module
    reasons = []
    for name in _candidates():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # missing, or a stub wheel / missing libnvinfer
            reasons.append(f"{name}: {exc}")
            continue
        if not hasattr(module, "Builder"):  # e.g. a namespace stub without bindings
            reasons.append(f"{name}: no Builder in the module")
            continue
        _module = module
        return module
    tried = "; ".join(reasons) or "nothing importable"
    raise TrtNotInstalled(f"TensorRT is not installed ({tried[:160]}); {INSTALL_HINT}")


def flavour(trt: ModuleType | None = None) -> str:
    trt = trt or import_trt()
    return "tensorrt_rtx" if trt.__name__.split(".")[0] == "tensorrt_rtx" else "tensorrt"


@dataclass(frozen=True)
class TrtInfo:
    flavour: str                 # "tensorrt" or "tensorrt_rtx"
    version: str                 # e.g. "10.3.0" or "1.7.1.116"
    major: int
    minor: int
    strongly_typed: bool         # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    precision_flags: bool        # BuilderFlag.FP16 / INT8 exist (TensorRT <= 10.x)
    timing_cache: bool           # a timing cache that does something (not RTX)
    optimization_level: bool     # IBuilderConfig.builder_optimization_level
    plugin_library: bool         # IPluginRegistry.load_library

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"{self.flavour} {self.version}"


def trt_info(trt: ModuleType | None = None) -> TrtInfo:
    trt = trt or import_trt()
    version = str(getattr(trt, "__version__", "0.0"))
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]] + [0, 0]
    flags = getattr(trt, "BuilderFlag", None)
    members = set(getattr(flags, "__members__", {}) or {})
    net_flags = set(getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "__members__", {}) or {})
    config_cls = getattr(trt, "IBuilderConfig", object)
    rtx = flavour(trt) == "tensorrt_rtx"
    return TrtInfo(
        flavour=flavour(trt), version=version, major=parts[0], minor=parts[1],
        strongly_typed="STRONGLY_TYPED" in net_flags,
        precision_flags="FP16" in members,
        timing_cache=hasattr(config_cls, "create_timing_cache") and not rtx,
        optimization_level=hasattr(config_cls, "builder_optimization_level"),
        plugin_library=hasattr(getattr(trt, "IPluginRegistry", object), "load_library"))


# --------------------------------------------------------------------------- device
@dataclass(frozen=True)
class DeviceInfo:
    name: str                    # GPU name, or "cpu-build"
    compute_capability: str      # "8.7", or "" without a GPU

    @property
    def label(self) -> str:
        return self.name if not self.compute_capability else f"{self.name} (sm {self.compute_capability})"

    @property
    def has_gpu(self) -> bool:
        return self.name != CPU_BUILD

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability}


def _cuda_driver_device(index: int = 0) -> DeviceInfo | None:
    """Name and compute capability through the CUDA driver API (no torch, no pycuda)."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        try:
            if cuda.cuInit(0) != 0:
                return None
            count = ctypes.c_int(0)
            if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
                return None
            dev = ctypes.c_int(0)
            if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
                return None
            name = ctypes.create_string_buffer(256)
            cuda.cuDeviceGetName(name, 256, dev)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
            cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
            return DeviceInfo(name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}")
        except (AttributeError, OSError):
            return None
    return None


def device_info(index: int = 0) -> DeviceInfo:
    """The GPU engines are built for; ``cpu-build`` when there is none (TensorRT-RTX only)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.device_count() > index:
                major, minor = torch.cuda.get_device_capability(index)
                return DeviceInfo(torch.cuda.get_device_name(index), f"{major}.{minor}")
        except Exception:  # noqa: BLE001 - a broken CUDA install reads as "no GPU"
            pass
    found = _cuda_driver_device(index)
    return found if found is not None else DeviceInfo(CPU_BUILD, "")


def describe() -> str:
    """One line: which TensorRT and which device, e.g. for ``--version`` output and logs."""
    info, device = trt_info(), device_info()
    return f"{info.label} on {device.label}"


# --------------------------------------------------------------------------- plugin libraries
# plugins/cluster_sort/plugin_library.cpp embeds this line, so a library's TensorRT version can be
# read from the file before TensorRT loads it (a plugin built for another major crashes TensorRT).
_PLUGIN_BUILD_INFO = re.compile(rb"lcoan-plugins:tensorrt=(\d+)\.(\d+)\.(\d+);registration=(\w+);")
RTX_PLUGIN_ABI_MAJOR = 11  # TensorRT-RTX 1.x follows TensorRT 11's plugin registry
RTX_UNVERSIONED = "libtensorrt_rtx.so"
_REEXEC_MARK = "LCOAN_RTX_LIB_REEXEC"


@dataclass(frozen=True)
class PluginBuildInfo:
    tensorrt_version: str        # of the headers the library was compiled against, e.g. "10.3.0"
    major: int
    registration: str            # "dynamic" (getCreators) or "static" (registers itself on load)


def plugin_build_info(path: str | os.PathLike) -> PluginBuildInfo | None:
    """What plugins.build recorded in a plugin library; None for libraries built elsewhere."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    m = _PLUGIN_BUILD_INFO.search(data)
    if m is None:
        return None
    major, minor, patch = (int(g) for g in m.groups()[:3])
    return PluginBuildInfo(f"{major}.{minor}.{patch}", major, m.group(4).decode())


def plugin_abi_major(trt: ModuleType | None = None) -> int:
    """The TensorRT major whose plugin ABI this runtime expects (11 for TensorRT-RTX 1.x)."""
    trt = trt or import_trt()
    return RTX_PLUGIN_ABI_MAJOR if flavour(trt) == "tensorrt_rtx" else trt_info(trt).major


def check_plugin_library(trt: ModuleType, path: str | os.PathLike) -> PluginBuildInfo | None:
    """Refuse, in one line, a plugin library compiled for another TensorRT major than ``trt``."""
    info = plugin_build_info(path)
    want = plugin_abi_major(trt)
    if info is not None and info.major != want:
        runtime = trt_info(trt).label + (f" (plugin ABI of TensorRT {want})" if flavour(trt) == "tensorrt_rtx" else "")
        raise EngineError(f"plugin library {path} was compiled against TensorRT {info.tensorrt_version} headers "
                          f"but this process runs {runtime}; build one for TensorRT {want}: "
                          f"`python -m plugins.build --tensorrt-root <TensorRT {want} prefix>`")
    return info


def _loaded_library(name_prefix: str) -> Path | None:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if Path(path).name.startswith(name_prefix):
            return Path(path)
    return None


def rtx_library_dir(trt: ModuleType | None = None) -> Path:
    """A project-owned folder holding ``libtensorrt_rtx.so`` -> the wheel's ``libtensorrt_rtx.so.1``.

    TensorRT-RTX's ONNX parser dlopen()s the unversioned name when it creates a plugin, and the
    wheel ships only the versioned file; the process aborts if the name cannot be found. The
    folder only helps when it is on LD_LIBRARY_PATH before the process starts (the dynamic loader
    reads it once).
    """
    trt = trt or import_trt()
    target = _loaded_library(RTX_UNVERSIONED + ".")
    if target is None:
        import tensorrt_rtx_libs  # the wheel that ships the library
        target = Path(tensorrt_rtx_libs.__file__).parent / f"{RTX_UNVERSIONED}.1"
    base = Path(os.environ.get("LCOAN_CACHE", Path.home() / ".cache" / "lcoan"))
    folder = base / "lib" / f"tensorrt_rtx-{trt_info(trt).version}"
    link = folder / RTX_UNVERSIONED
    if not (link.is_symlink() and Path(os.readlink(link)) == target):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{RTX_UNVERSIONED}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)  # atomic: concurrent processes never see a half-made link
    return folder


def rtx_plugins_ready(trt: ModuleType | None = None) -> bool:
    """True unless this is TensorRT-RTX and ``libtensorrt_rtx.so`` cannot be opened by name.

    Opening it here also helps: the parser's later dlopen() of the same name finds it loaded.
    """
    trt = trt or import_trt()
    if flavour(trt) != "tensorrt_rtx":
        return True
    try:
        ctypes.CDLL(RTX_UNVERSIONED)
    except OSError:
        return False
    return True


def require_rtx_plugins_ready(trt: ModuleType | None = None) -> None:
    """One-line error, instead of TensorRT-RTX aborting the process, when plugins cannot work."""
    trt = trt or import_trt()
    if not rtx_plugins_ready(trt):
        folder = rtx_library_dir(trt)
        raise EngineError(f"TensorRT-RTX opens {RTX_UNVERSIONED} when it creates a plugin and it is not on the "
                          f"library path (the wheel ships only {RTX_UNVERSIONED}.1); start the process with "
                          f"LD_LIBRARY_PATH={folder}:$LD_LIBRARY_PATH (the link there was just made)")


def reexec_for_rtx_plugins(trt: ModuleType | None = None) -> None:
    """For command-line entry points: restart this process once with the link folder on LD_LIBRARY_PATH."""
    trt = trt or import_trt()
    if rtx_plugins_ready(trt) or os.environ.get(_REEXEC_MARK):
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(rtx_library_dir(trt)), env.get("LD_LIBRARY_PATH")) if p)
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
