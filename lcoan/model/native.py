"""The attention's native CPU kernel (``csrc/window_apply.cpp``), compiled on first use.

The kernel is plain C++ with a C ABI, built for the machine it runs on (``-march=native``) by the
system's C++ compiler into a cache folder, and loaded with ctypes; nothing is compiled at install
time. Where it cannot be built or loaded, callers fall back to the PyTorch ops (one warning).

    LCOAN_NATIVE=0         never use it (the PyTorch ops everywhere)
    LCOAN_CACHE_DIR=...    where built libraries go (default: $XDG_CACHE_HOME/lcoan or ~/.cache/lcoan)
    CXX=...                the compiler (default: c++)
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "window_apply.cpp"
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread"]
# OpenMP if the compiler has it: the loaded library then shares PyTorch's libgomp (same soname,
# already loaded) and its thread pool. Without it the kernels run on one thread.
OPENMP = ["-fopenmp"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def enabled() -> bool:
    return os.environ.get("LCOAN_NATIVE", "1") != "0"


def cache_dir() -> Path:
    if os.environ.get("LCOAN_CACHE_DIR"):
        return Path(os.environ["LCOAN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lcoan"


def _cpu_key() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    text = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        text += "".join(line for line in info.splitlines()[:40] if line.startswith(("model name", "flags")))
    except OSError:
        text += platform.processor()
    return text


def library_path(compiler: str) -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS, *OPENMP, _cpu_key()]).encode()).hexdigest()[:16]
    return cache_dir() / "native" / f"window_apply-{key}.so"


def build(compiler: str | None = None) -> Path:
    """Compile the kernel (if not cached) and return its path; raises RuntimeError with the reason."""
    compiler = compiler or os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler}) on PATH")
    path = library_path(compiler)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # built aside, then renamed: atomic
        out = Path(tmp) / path.name
        for extra in (OPENMP, []):
            proc = subprocess.run([compiler, *FLAGS, *extra, str(SOURCE), "-o", str(out)],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            raise RuntimeError(f"{compiler} failed on {SOURCE.name}: {proc.stderr.strip()[-500:]}")
        os.replace(out, path)
    return path


def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None if it is disabled or could not be built (warned once)."""
    global _lib, _failed
    if _lib is not None or _failed is not None or not enabled():
        return _lib if enabled() else None
    with _lock:
        if _lib is None and _failed is None:
            try:
                lib = ctypes.CDLL(str(build()))
                lib.lcoan_window_apply.restype = ctypes.c_int
                lib.lcoan_window_apply.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] + [ctypes.c_int32] * 3
                lib.lcoan_window_apply_channels.restype = ctypes.c_int
                lib.lcoan_window_apply_channels.argtypes = [ctypes.c_int32]
                lib.lcoan_gather_add.restype = None
                lib.lcoan_gather_add.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int32, ctypes.c_float]
                                                 + [ctypes.c_int32] * 2)
                _lib = lib
            except (RuntimeError, OSError) as exc:
                _failed = str(exc)
                warnings.warn(f"lcoan: the native attention kernel is unavailable, using PyTorch ops ({exc})",
                              RuntimeWarning, stacklevel=2)
    return _lib


def _plain_eager() -> bool:
    """No tracing, compiling or dispatch mode (FLOP counting, fake tensors) is watching: the
    kernels read raw pointers, which those would neither see nor have."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None)


def usable(weights: Tensor, rows: Tensor) -> bool:
    """Whether ``window_apply`` runs for these operands (CPU float32 inference, a supported C)."""
    if weights.device.type != "cpu" or weights.dtype != torch.float32 or rows.dtype != torch.float32:
        return False
    if not _plain_eager():
        return False
    if torch.is_grad_enabled() and (weights.requires_grad or rows.requires_grad):
        return False
    lib = library()
    return lib is not None and bool(lib.lcoan_window_apply_channels(rows.shape[-1]))


def window_apply(weights: Tensor, rows: Tensor, index: Tensor, out: Tensor, threads: int | None = None) -> Tensor:
    """out[i] = weights[i] @ rows[index[i]] for every window i (Eq. 12 before the inverse sort).

    weights [..., w, 3w] (n windows in all), rows [N, C], index [n * 3w] int64 row ids, out [..., w, C];
    all contiguous. Call only where ``usable`` says so.
    """
    window, channels = weights.shape[-2], rows.shape[-1]
    n = weights.numel() // (3 * window * window)
    assert weights.is_contiguous() and rows.is_contiguous() and out.is_contiguous() and index.is_contiguous()
    assert index.dtype == torch.int64 and index.numel() == 3 * window * n and out.numel() == n * window * channels
    with torch.profiler.record_function("lcoan::window_apply"):  # visible to torch.profiler
        status = library().lcoan_window_apply(weights.data_ptr(), rows.data_ptr(), index.data_ptr(),
                                              out.data_ptr(), n, window, channels, threads or torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"no native window kernel for {channels} channels")
    return out


def gather_add(x: Tensor, rows: Tensor, index: Tensor, alpha: float, threads: int | None = None) -> Tensor | None:
    """x + alpha * rows[b, index[b]] laid out as x ([B, C, H, W], NCHW- or NHWC-contiguous), or None
    where the kernel does not apply (then the caller does it with PyTorch ops)."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or rows.dtype != torch.float32
            or (torch.is_grad_enabled() and (x.requires_grad or rows.requires_grad))
            or not rows.is_contiguous() or not _plain_eager() or library() is None):
        return None
    nchw = x.is_contiguous()
    if not (nchw or x.is_contiguous(memory_format=torch.channels_last)):
        return None
    index = index.to(torch.int64).contiguous()
    batch, channels, height, width = x.shape
    out = torch.empty_like(x)
    step_x, step_rows = channels * height * width, rows.shape[1] * channels
    lib, threads = library(), threads or torch.get_num_threads()
    with torch.profiler.record_function("lcoan::gather_add"):
        for b in range(batch):
            lib.lcoan_gather_add(x.data_ptr() + 4 * b * step_x, rows.data_ptr() + 4 * b * step_rows,
                                 index[b].data_ptr(), out.data_ptr() + 4 * b * step_x, height * width, channels,
                                 alpha, int(nchw), threads)
    return out
