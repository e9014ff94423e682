"""The one import point for TensorRT: ``tensorrt`` (TensorRT 10.x / 11.x, JetPack), else
``tensorrt_rtx`` (TensorRT for RTX, ``pip install tensorrt-rtx-cu13``).

    from export.trt import import_trt, trt_info, device_info
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
import sys
from dataclasses import asdict, dataclass
from types import ModuleType

from .errors import ExportError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
CPU_BUILD = "cpu-build"
INSTALL_HINT = ("install TensorRT: `pip install tensorrt-rtx-cu13` (TensorRT for RTX; builds engines "
                "on any machine) or, on Jetson, JetPack's TensorRT (`sudo apt install "
                "python3-libnvinfer`; JetPack 6 ships TensorRT 10.3)")


class TrtNotInstalled(ExportError):
    """Neither ``tensorrt`` nor ``tensorrt_rtx`` can be imported."""


_module: ModuleType | None = None


def _candidates() -> tuple[str, ...]:
    wanted = os.environ.get("LCOAN_TRT", "").strip()
    if wanted:
        if wanted not in FLAVOURS:
            raise ExportError(f"LCOAN_TRT={wanted!r}: expected one of {', '.join(FLAVOURS)}")
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
