"""Configure and build the CUDA kernels / TensorRT plugins with CMake.

    python -m plugins.build [--arch 87 --arch 90] [--harness-only] [--build-dir DIR] [--tensorrt-root DIR]

Builds into ``plugins/build/`` (harness only) or ``plugins/build/trt<major>/`` (with the TensorRT
headers; git-ignored) and prints the produced libraries. The plugin libraries carry the TensorRT
major of the headers in their names, ``liblcoan_plugins_trt10.so`` / ``liblcoan_plugins_static_trt10.so``,
and the full header version inside the file (read by :func:`engine.trt.plugin_build_info`): a plugin
binary serves one TensorRT major. ``build()`` is the programmatic entry point used by
:mod:`plugins.loader` and the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
# lcoan.errors imports only the standard library, so gpu_check's bare python3 can still import this
from lcoan.errors import EXIT_FAILED, ArgumentParser, LcoanError, UsageError, exit_status, run_cli

PLUGINS_DIR = Path(__file__).resolve().parent
CLUSTER_SORT_DIR = PLUGINS_DIR / "cluster_sort"
DEFAULT_BUILD_DIR = PLUGINS_DIR / "build"

HARNESS_TARGET = "lcoan_cluster_sort_harness"
HARNESS_LIB = "liblcoan_cluster_sort_harness.so"
PLUGIN_TARGETS = ("lcoan_plugins", "lcoan_plugins_static", "lcoan_plugin_host_test")
HOST_TEST = "lcoan_plugin_host_test"


def plugin_lib_name(major: int, static: bool = False) -> str:
    """``liblcoan_plugins_trt<major>.so`` (getCreators) or ``liblcoan_plugins_static_trt<major>.so``."""
    return f"liblcoan_plugins{'_static' if static else ''}_trt{int(major)}.so"

#: Same default list as plugins/CMakeLists.txt (each kept only if nvcc supports it).
DEFAULT_CUDA_ARCHS = (87, 89, 90, 100, 120)

KERNEL_SOURCES = (CLUSTER_SORT_DIR / "cluster_sort_kernel.cu", CLUSTER_SORT_DIR / "cluster_sort_kernel.cuh")
HARNESS_SOURCES = KERNEL_SOURCES + (CLUSTER_SORT_DIR / "harness.cu", PLUGINS_DIR / "CMakeLists.txt")

# Where the TensorRT headers are looked for (mirrors plugins/CMakeLists.txt).
_TRT_SYSTEM_INCLUDE_DIRS = (
    "/usr/include/aarch64-linux-gnu",
    "/usr/include/x86_64-linux-gnu",
    "/usr/include",
    "/usr/local/TensorRT/include",
)


class BuildError(LcoanError, RuntimeError):
    """CMake/nvcc/the TensorRT headers are missing or the build failed."""


class BuildFailed(BuildError):
    """A CMake or compiler command ran and failed. ``str()`` keeps the tail of its output (callers
    such as gpu_check record it); the command line prints ``output`` as the compiler wrote it, then
    the one ``error:`` line with ``summary``."""

    exit_code = EXIT_FAILED  # the tools were there and the command was right; the sources did not build

    def __init__(self, summary: str, output: str = ""):
        super().__init__(f"{summary}\n{output}" if output else summary)
        self.summary, self.output = summary, output


@dataclass(frozen=True)
class BuildResult:
    build_dir: Path
    harness: Path | None
    plugin: Path | None  # dynamic registration (getCreators)
    plugin_static: Path | None  # registers itself when dlopen()ed
    tensorrt_version: str | None = None  # of the headers the plugins were compiled against
    host_test: Path | None = None  # lcoan_plugin_host_test


def find_nvcc() -> str | None:
    """nvcc from $CUDACXX, PATH or /usr/local/cuda/bin."""
    env = os.environ.get("CUDACXX")
    if env and Path(env).is_file():
        return env
    found = shutil.which("nvcc")
    if found:
        return found
    fallback = Path("/usr/local/cuda/bin/nvcc")
    return str(fallback) if fallback.is_file() else None


def nvcc_known_archs(nvcc: str) -> set[int]:
    """Virtual architectures this nvcc accepts (``nvcc --list-gpu-arch``); empty if it cannot say."""
    try:
        out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {int(m) for m in re.findall(r"compute_(\d+)", out)}


def default_cuda_archs(nvcc: str | None = None) -> list[int]:
    """The default architecture list filtered by what ``nvcc`` supports."""
    nvcc = nvcc or find_nvcc()
    known = nvcc_known_archs(nvcc) if nvcc else set()
    if not known:
        return [87, 89, 90]
    return [a for a in DEFAULT_CUDA_ARCHS if a in known]


def gencode_flags(archs: list[int]) -> list[str]:
    """nvcc flags equivalent to the CMake default: SASS for every arch, PTX for the lowest."""
    flags: list[str] = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    if archs:
        low = min(archs)
        flags += ["-gencode", f"arch=compute_{low},code=compute_{low}"]
    return flags


def _python_site_dirs() -> list[Path]:
    import site
    import sysconfig

    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # pragma: no cover - some virtualenv flavours
        pass
    return [Path(d) for d in dict.fromkeys(dirs)]


def find_tensorrt_include(tensorrt_root: str | os.PathLike | None = None) -> Path | None:
    """Directory holding NvInferRuntime.h, searched like plugins/CMakeLists.txt does."""
    candidates: list[Path] = []
    root = tensorrt_root or os.environ.get("TENSORRT_ROOT")
    if root:
        candidates += [Path(root) / "include", Path(root)]
    candidates += [Path(p) for p in _TRT_SYSTEM_INCLUDE_DIRS]
    for site_dir in _python_site_dirs():
        for pkg in ("tensorrt_libs", "tensorrt", "tensorrt_bindings"):
            candidates.append(site_dir / pkg / "include")
    for c in candidates:
        if (c / "NvInferRuntime.h").is_file():
            return c
    return None


def tensorrt_header_version(include_dir: str | os.PathLike) -> tuple[int, int, int]:
    """(major, minor, patch) from NvInferVersion.h; 11.x spells NV_TENSORRT_MAJOR as TRT_MAJOR_ENTERPRISE."""
    path = Path(include_dir) / "NvInferVersion.h"
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise BuildError(f"{path}: cannot read the TensorRT version ({e.strerror})") from None
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\w+)", text, flags=re.M))
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        value = defines.get(f"NV_TENSORRT_{part}", "")
        value = defines.get(value, value)
        if not value.isdigit():
            raise BuildError(f"{path}: no numeric NV_TENSORRT_{part}")
        parts.append(int(value))
    return parts[0], parts[1], parts[2]


def _call(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=not verbose, text=True)
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-4000:]
        raise BuildFailed(f"command failed ({proc.returncode}): {' '.join(cmd)}", tail)


def _arch_value(arch: list[str] | list[int] | str | None) -> str | None:
    if arch is None:
        return None
    if isinstance(arch, str):
        return arch
    return ";".join(str(a) for a in arch)


def build(
    arch: list[str] | list[int] | str | None = None,
    harness_only: bool = False,
    build_dir: str | os.PathLike | None = None,
    tensorrt_root: str | os.PathLike | None = None,
    jobs: int | None = None,
    verbose: bool = False,
    werror: bool = False,
    plugins_only: bool = False,
) -> BuildResult:
    """Configure (if needed) and build; returns the paths of what exists afterwards.

    ``arch`` is a CMake CUDA_ARCHITECTURES value ("87;90", [87, 90]); None keeps the cached value,
    or the default list on a fresh build directory. Without ``build_dir`` a harness-only build goes
    to ``plugins/build`` and a build with TensorRT headers to ``plugins/build/trt<major>``.
    ``werror`` turns warnings in our sources into errors (CI); ``plugins_only`` builds just the plugin
    libraries and their host test (not the harness).
    """
    if tensorrt_root and not Path(tensorrt_root).is_dir():
        # else the search below falls through to the system headers and builds for another TensorRT
        raise BuildError(f"{tensorrt_root}: no such folder (--tensorrt-root, the TensorRT prefix)")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError("cmake not found on PATH (needed to build plugins/)")
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found (set CUDACXX or put the CUDA toolkit's bin/ on PATH)")

    trt_version = None
    if not harness_only:
        inc = find_tensorrt_include(tensorrt_root)
        if inc is not None:
            trt_version = tensorrt_header_version(inc)
        elif tensorrt_root or plugins_only:
            raise BuildError(f"TensorRT headers (NvInferRuntime.h) not found under "
                             f"{tensorrt_root or 'the default locations'}")
    if build_dir:
        bdir = Path(build_dir)
    elif trt_version is not None:
        bdir = DEFAULT_BUILD_DIR / f"trt{trt_version[0]}"
    else:
        bdir = DEFAULT_BUILD_DIR
    from lcoan.safeio import check_writable  # standard library only, as lcoan.errors
    # cmake's own mkdir would be a PermissionError traceback: one line naming the folder instead
    check_writable(bdir / "CMakeCache.txt", what="build folder")
    configure = [cmake, "-S", str(PLUGINS_DIR), "-B", str(bdir), f"-DCMAKE_CUDA_COMPILER={nvcc}",
                 f"-DLCOAN_PYTHON={sys.executable}", f"-DLCOAN_WERROR={'ON' if werror else 'OFF'}"]
    arch_value = _arch_value(arch)
    if arch_value:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={arch_value}")
    if tensorrt_root:
        configure.append(f"-DTENSORRT_ROOT={Path(tensorrt_root).resolve()}")
    _call(configure, verbose)  # cheap when cached; keeps LCOAN_WERROR and the header set current

    jobs = jobs or max(1, min(os.cpu_count() or 1, 8))
    cmd = [cmake, "--build", str(bdir), "--parallel", str(jobs)]
    if harness_only:
        cmd += ["--target", HARNESS_TARGET]
    elif plugins_only:
        cmd += ["--target", *PLUGIN_TARGETS]
    _call(cmd, verbose)

    def existing(name: str) -> Path | None:
        p = bdir / name
        return p if p.is_file() else None

    major = trt_version[0] if trt_version else None
    return BuildResult(
        bdir, existing(HARNESS_LIB),
        existing(plugin_lib_name(major)) if major is not None else None,
        existing(plugin_lib_name(major, static=True)) if major is not None else None,
        ".".join(map(str, trt_version)) if trt_version else None,
        existing(HOST_TEST) if major is not None else None)


def _newest_mtime(paths) -> float:
    return max(p.stat().st_mtime for p in paths if p.exists())


def harness_is_stale(build_dir: str | os.PathLike | None = None) -> bool:
    lib = (Path(build_dir) if build_dir else DEFAULT_BUILD_DIR) / HARNESS_LIB
    return not lib.is_file() or lib.stat().st_mtime < _newest_mtime(HARNESS_SOURCES)


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m plugins.build", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="CUDA architecture(s), e.g. 87 or 90-real (repeatable)")
    ap.add_argument("--harness-only", action="store_true", help="build only kernels + ctypes harness (no TensorRT)")
    ap.add_argument("--build-dir", default=None, help=f"default: {DEFAULT_BUILD_DIR}")
    ap.add_argument("--tensorrt-root", default=None, help="TensorRT prefix (else $TENSORRT_ROOT / system paths)")
    ap.add_argument("-j", "--jobs", type=int, default=None, help="parallel compile jobs (default: CMake's)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show CMake's and the compiler's output as they run")
    ap.add_argument("--werror", action="store_true", help="warnings in our sources are errors (CI)")
    return ap


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        res = build(args.arch, args.harness_only, args.build_dir, args.tensorrt_root, args.jobs, args.verbose,
                    werror=args.werror)
    except BuildFailed as e:
        if e.output.strip():  # the compiler's diagnostics keep their lines; the error line comes last
            print(e.output.rstrip(), file=sys.stderr)
        raise BuildFailed(e.summary) from None
    print(f"build dir:      {res.build_dir}")
    print(f"harness:        {res.harness or '-'}")
    if not args.harness_only:
        note = "" if res.plugin else " (TensorRT headers not found; set --tensorrt-root / TENSORRT_ROOT)"
        print(f"TensorRT:       {res.tensorrt_version or '-'} (headers; the plugins serve this major only)")
        print(f"plugin:         {res.plugin or '-'}{note}")
        print(f"plugin static:  {res.plugin_static or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m plugins.build`` (and the ``lcoan-build-plugins`` script): returns the exit status;
    errors are one line (:func:`lcoan.errors.exit_status`): status 2 for a missing tool or folder,
    1 for a command that failed."""
    return exit_status(_run, argv)


if __name__ == "__main__":
    run_cli(_run)
