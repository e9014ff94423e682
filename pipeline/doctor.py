"""What this machine has for each stage, and which backend each tool will use.

    python -m pipeline.doctor            # or lcoan-doctor: one line per finding, then the choices
    python -m pipeline.doctor --json     # the same as JSON
    python -m pipeline.doctor --demo-backend   # make demo: prints tensorrt | torch-cuda | onnxruntime-cpu

It looks at torch and its CUDA, the GPU and its compute capability, TensorRT or TensorRT-RTX
(through ``engine.trt``, the project's one TensorRT import point), ONNX Runtime's providers,
PyAV's NVIDIA codecs (whether ``h264_cuvid`` and ``h264_nvenc`` *open*, not just whether they are
listed: every PyAV wheel lists them) and GStreamer with its NVIDIA elements. For every path that
is missing it says why and prints the line that installs it. Nothing here loads a model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Optional, Sequence

TEGRA_RELEASE = Path(os.environ.get("LCOAN_TEGRA_RELEASE", "/etc/nv_tegra_release"))
# TensorRT-RTX runs engines on Turing, consumer Ampere, Ada and Blackwell only: not on A100/H100
# (8.0/9.0) nor on Jetson's Orin (8.7)
RTX_RUNS_ON = ("7.5", "8.6", "8.9")
RTX_RUNS_ON_MAJOR = 12
NVDEC = ("h264_cuvid", "hevc_cuvid")
NVENC = ("h264_nvenc", "hevc_nvenc")
GST_NVIDIA = ("nvarguscamerasrc", "nvvidconv", "nvv4l2decoder", "nvv4l2h264enc", "nvv4l2h265enc")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


def jetson_release() -> Optional[str]:
    """JetPack's L4T release line (``# R36 (release), REVISION: 4.3, ...``), or None off a Jetson."""
    try:
        return TEGRA_RELEASE.read_text().splitlines()[0].lstrip("# ").strip()
    except (OSError, IndexError):
        return None


def install_lines(jetson: bool) -> dict:
    """What to run for each missing path, on this kind of machine."""
    from engine.trt import INSTALL_HINT
    return {
        "torch-cuda": ("NVIDIA's torch wheel for JetPack 6 (docs/jetson.md), then `make setup` (it keeps it)"
                       if jetson else "`make setup TORCH=cuda` (PyPI's CUDA 13.0 build) or `TORCH=cu126` "
                                      "(PyTorch's index); or keep your own: `TORCH=keep`"),
        "tensorrt": ("`sudo apt install python3-libnvinfer` (JetPack's TensorRT 10.3), then `make setup` "
                     "(on a Jetson the venv sees system packages)" if jetson else
                     INSTALL_HINT + "; NVIDIA TensorRT itself: docker/Dockerfile.x86 (NGC image)"),
        "gpu": "an NVIDIA GPU with its driver (nvidia-smi lists it); none is visible to this process",
        "ort-cuda": "`pip install onnxruntime-gpu` (remove `onnxruntime` first: both install the same module)",
        "nvdec": ("GStreamer's nvv4l2decoder (JetPack; the app uses it for gst:/rtsp:// inputs)" if jetson else
                  "an NVIDIA driver with NVDEC (libnvcuvid.so.1; in containers NVIDIA_DRIVER_CAPABILITIES=video)"),
        "nvenc": ("GStreamer's nvv4l2h264enc (JetPack; not on Orin Nano, which has no encoder)" if jetson else
                  "an NVIDIA GPU with NVENC (not H100/H200) and libnvidia-encode.so.1 "
                  "(in containers NVIDIA_DRIVER_CAPABILITIES=video)"),
        "gstreamer": "`sudo make setup` (apt-get installs GStreamer and PyGObject builds against it)",
        "gst-nvidia": "nvidia-l4t-gstreamer (JetPack; Jetson only)",
    }


# --------------------------------------------------------------------------- probes
def probe_torch() -> dict:
    try:
        import torch
    except ImportError as exc:
        return {"found": False, "error": _one_line(exc)}
    cuda = bool(torch.cuda.is_available())
    return {"found": True, "version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda,
            "devices": torch.cuda.device_count() if cuda else 0}


def probe_tensorrt(gpu: dict, torch_info: dict) -> dict:
    from engine.trt import TrtNotInstalled, import_trt, trt_info
    try:
        info = trt_info(import_trt())
    except TrtNotInstalled as exc:
        return {"found": False, "error": str(exc), "builds": False, "runs": False,
                "why": "neither tensorrt nor tensorrt_rtx imports"}
    out = {"found": True, "flavour": info.flavour, "version": info.version, "builds": True}
    cc = gpu.get("compute_capability") or ""
    if not gpu["found"]:
        out.update(runs=False, why="no CUDA GPU: engines can be built " +
                   ("(TensorRT-RTX's CPU-only mode) " if info.flavour == "tensorrt_rtx" else "only on a GPU ") +
                   "but not run")
        out["builds"] = info.flavour == "tensorrt_rtx"
    elif info.flavour == "tensorrt_rtx" and cc not in RTX_RUNS_ON and not cc.startswith(f"{RTX_RUNS_ON_MAJOR}."):
        out.update(runs=False, why=f"TensorRT-RTX does not run on compute capability {cc} ({gpu['name']}); "
                                   f"it supports {', '.join(RTX_RUNS_ON)} and {RTX_RUNS_ON_MAJOR}.x")
    elif not torch_info.get("cuda_available"):
        out.update(runs=False, why="the engine runtime moves frames as torch CUDA tensors and torch has no CUDA")
    else:
        out.update(runs=True, why=f"{info.flavour} {info.version} on {gpu['name']} (sm {cc})")
    return out


def probe_onnxruntime() -> dict:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"found": False, "error": _one_line(exc), "providers": []}
    return {"found": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}


def _decoder_opens(name: str) -> Optional[str]:
    import av
    if name not in av.codecs_available:
        return "not in this FFmpeg build"
    try:
        ctx = av.CodecContext.create(name, "r")
        ctx.width, ctx.height = 256, 256
        ctx.open()
    except Exception as exc:  # no driver, no GPU: the reason is the finding
        return f"does not open here ({_one_line(exc)})"
    return None


def probe_pyav() -> dict:
    try:
        import av
    except ImportError as exc:
        return {"found": False, "error": _one_line(exc), "codecs": {}}
    from app.sinks import codec_opens
    codecs = {name: _decoder_opens(name) for name in NVDEC}
    codecs.update({name: codec_opens(name) for name in NVENC})
    return {"found": True, "version": av.__version__,
            "codecs": {name: {"opens": why is None, "why": why or "opens"} for name, why in codecs.items()}}


def probe_gstreamer() -> dict:
    from app import gst
    ok, detail = gst.available()
    if not ok:
        return {"found": False, "error": detail, "elements": {}}
    return {"found": True, "version": detail,
            "elements": {e: {"found": gst.have(e), "why": "found" if gst.have(e) else gst.missing_line(e)}
                         for e in GST_NVIDIA}}


def probe_gpu(torch_info: dict) -> dict:
    from engine.trt import device_info
    if torch_info.get("found"):
        import torch  # noqa: F401 - device_info asks torch first when it is loaded
    dev = device_info()
    return {"found": dev.has_gpu, "name": dev.name if dev.has_gpu else None,
            "compute_capability": dev.compute_capability or None}


def gather() -> dict:
    """Every probe, the backend each tool will use and what is missing, as one JSON-able dict."""
    release = jetson_release()
    torch_info = probe_torch()
    gpu = probe_gpu(torch_info)
    report = {
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "python": platform.python_version(), "prefix": sys.prefix, "jetson": release},
        "torch": torch_info, "gpu": gpu, "tensorrt": probe_tensorrt(gpu, torch_info),
        "onnxruntime": probe_onnxruntime(), "pyav": probe_pyav(), "gstreamer": probe_gstreamer(),
    }
    report["demo"] = dict(zip(("backend", "why"), demo_choice(report)))
    report["tools"] = tool_backends(report)
    report["missing"] = missing_paths(report, install_lines(release is not None))
    return report


def demo_choice(r: dict) -> tuple[str, str]:
    """(tensorrt | torch-cuda | onnxruntime-cpu, why): what the app (and make demo) can run fastest."""
    trt, torch_info, gpu = r["tensorrt"], r["torch"], r["gpu"]
    if trt.get("runs"):
        return "tensorrt", f"a TensorRT engine: {trt['why']}"
    no_engine = f"no engine: {trt['why']}" if trt.get("found") else "no TensorRT"
    if torch_info.get("cuda_available"):
        return "torch-cuda", f"torch {torch_info['version']} on {gpu['name']}; {no_engine}"
    why = "no CUDA GPU" if not gpu["found"] else f"torch {torch_info.get('version', '(none)')} has no CUDA"
    return "onnxruntime-cpu", f"the FP32 graph on ONNX Runtime's CPU provider: {why}; {no_engine}"


def _ort_provider(r: dict) -> tuple[str, str]:
    providers = r["onnxruntime"]["providers"]
    for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if p in providers and r["gpu"]["found"]:
            return p, f"available with a GPU ({', '.join(providers)})"
    if not r["onnxruntime"]["found"]:
        return "none", r["onnxruntime"]["error"]
    return "CPUExecutionProvider", f"no CUDA provider in this onnxruntime ({', '.join(providers)})"


def _video_paths(r: dict) -> dict:
    codecs, elements = r["pyav"]["codecs"], r["gstreamer"]["elements"]
    dec = next((n for n in NVDEC if codecs.get(n, {}).get("opens")), None)
    enc = next((n for n in NVENC if codecs.get(n, {}).get("opens")), None)
    gst_dec = elements.get("nvv4l2decoder", {}).get("found")
    gst_enc = elements.get("nvv4l2h264enc", {}).get("found")
    decode = (f"{dec} (NVDEC through PyAV)" if dec else "nvv4l2decoder (GStreamer) for gst:/rtsp:// inputs, "
              "software H.264 for files" if gst_dec else "software (FFmpeg's decoder with frame threads)")
    encode = (f"{enc} (NVENC through PyAV)" if enc else "nvv4l2h264enc (GStreamer) for .mp4/.mkv outputs"
              if gst_enc else "libx264 (software)")
    why_dec = "opens" if dec else codecs.get("h264_cuvid", {}).get("why", r["pyav"].get("error", ""))
    why_enc = "opens" if enc else codecs.get("h264_nvenc", {}).get("why", r["pyav"].get("error", ""))
    return {"app decode": {"backend": decode, "why": f"h264_cuvid {why_dec}"},
            "app encode": {"backend": encode, "why": f"h264_nvenc {why_enc}"}}


def tool_backends(r: dict) -> dict:
    torch_info, gpu, trt = r["torch"], r["gpu"], r["tensorrt"]
    cuda = torch_info.get("cuda_available")
    torch_why = (f"torch {torch_info['version']} sees {gpu['name']}" if cuda else
                 f"torch {torch_info.get('version', '(not installed)')} "
                 + ("is a CPU build" if torch_info.get("found") and not torch_info.get("cuda_build") else "has no GPU"))
    demo_backend, demo_why = demo_choice(r)
    provider, provider_why = _ort_provider(r)
    build = (f"{trt['flavour']} {trt['version']}" + ("" if gpu["found"] else " (CPU-only build mode)")
             if trt.get("builds") else "none")
    return {
        "lcoan-train / lcoan-upscale / lcoan-evaluate": {"backend": "torch cuda" if cuda else "torch cpu",
                                                         "why": torch_why},
        "lcoan-build-engine": {"backend": build, "why": trt.get("why") or trt.get("error", "")},
        "lcoan-app (video), make demo": {"backend": demo_backend, "why": demo_why},
        "ONNX Runtime (parity, calib, app --backend onnxruntime)": {"backend": provider, "why": provider_why},
        **_video_paths(r),
    }


def missing_paths(r: dict, lines: dict) -> list[dict]:
    """[{path, why, install}] for each fast path this machine lacks."""
    out = []

    def lack(path: str, why: str, key: str) -> None:
        out.append({"path": path, "why": why, "install": lines[key]})

    torch_info, gpu, trt = r["torch"], r["gpu"], r["tensorrt"]
    if not gpu["found"]:
        lack("GPU", "no CUDA device (driver API and torch both see none)", "gpu")
    if not torch_info.get("cuda_available"):
        lack("torch CUDA", f"torch {torch_info.get('version', '(not installed)')}: "
             + ("a CPU build" if not torch_info.get("cuda_build") else "CUDA build, but no GPU"), "torch-cuda")
    if not trt["found"]:
        lack("TensorRT", trt["error"], "tensorrt")
    elif not trt["runs"]:
        lack("TensorRT engines at run time", f"{trt['flavour']} {trt['version']} found; {trt['why']}",
             "gpu" if not gpu["found"] else "tensorrt")
    if "CUDAExecutionProvider" not in r["onnxruntime"]["providers"]:
        lack("ONNX Runtime CUDA", f"providers: {', '.join(r['onnxruntime']['providers']) or 'none'}", "ort-cuda")
    codecs = r["pyav"]["codecs"]
    if not any(codecs.get(n, {}).get("opens") for n in NVDEC):
        lack("NVDEC (PyAV)", f"h264_cuvid {codecs.get('h264_cuvid', {}).get('why', 'PyAV not installed')}", "nvdec")
    if not any(codecs.get(n, {}).get("opens") for n in NVENC):
        lack("NVENC (PyAV)", f"h264_nvenc {codecs.get('h264_nvenc', {}).get('why', 'PyAV not installed')}", "nvenc")
    gst = r["gstreamer"]
    if not gst["found"]:
        lack("GStreamer", gst["error"], "gstreamer")
    absent = [e for e, v in gst["elements"].items() if not v["found"]]
    if gst["found"] and absent:
        lack("GStreamer NVIDIA elements", f"not in the registry: {', '.join(absent)}", "gst-nvidia")
    return out


def _found_line(r: dict) -> list[tuple[str, str]]:
    p, t, g, trt, ort, av, gst = (r[k] for k in ("platform", "torch", "gpu", "tensorrt", "onnxruntime", "pyav",
                                                  "gstreamer"))
    yes = {True: "yes", False: "no"}
    return [
        ("platform", f"{p['system']} {p['machine']}, Python {p['python']}, "
                     + (f"Jetson: {p['jetson']}" if p["jetson"] else f"not a Jetson (no {TEGRA_RELEASE})")),
        ("torch", f"{t['version']}, {'CUDA ' + t['cuda_build'] if t['cuda_build'] else 'CPU build'}, CUDA "
                  f"available: {yes[t['cuda_available']]}" if t["found"] else f"not importable ({t['error']})"),
        ("GPU", f"{g['name']}, compute capability {g['compute_capability']}" if g["found"] else "none"),
        ("TensorRT", f"{trt['flavour']} {trt['version']} (engine.trt): builds {yes[trt['builds']]}, runs "
                     f"{yes[trt['runs']]}: {trt['why']}" if trt["found"] else "not importable"),
        ("ONNX Runtime", f"{ort['version']}, providers {', '.join(ort['providers'])}" if ort["found"]
         else f"not importable ({ort['error']})"),
        ("PyAV", f"{av['version']}: " + "; ".join(f"{n} {c['why']}" for n, c in av["codecs"].items())
         if av["found"] else f"not importable ({av['error']})"),
        ("GStreamer", f"{gst['version']}: " + ", ".join(f"{e} {yes[v['found']]}" for e, v in gst["elements"].items())
         if gst["found"] else f"not usable ({gst['error']})"),
    ]


def format_report(r: dict) -> str:
    lines = ["found:"] + [f"  {k:<13} {v}" for k, v in _found_line(r)]
    lines += ["backends:"] + [f"  {tool}: {v['backend']} ({v['why']})" for tool, v in r["tools"].items()]
    lines += ["missing:" if r["missing"] else "missing: nothing"]
    lines += [f"  {m['path']}: {m['why']}\n      install: {m['install']}" for m in r["missing"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from lcoan.errors import ArgumentParser
    ap = ArgumentParser(prog="python -m pipeline.doctor", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="the report as JSON")
    mode.add_argument("--demo-backend", action="store_true",
                      help="print only the app backend for make demo (tensorrt, torch-cuda or onnxruntime-cpu); "
                           "the reason goes to stderr")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipeline.doctor`` (and ``lcoan-doctor``): always exit 0; it reports, never fails."""
    args = build_parser().parse_args(argv)
    if args.demo_backend:
        r = {"platform": None, "torch": probe_torch()}
        r["gpu"] = probe_gpu(r["torch"])
        r["tensorrt"] = probe_tensorrt(r["gpu"], r["torch"])
        backend, why = demo_choice(r)
        print(f"demo: the app runs on {backend}: {why}", file=sys.stderr)
        print(backend)
        return 0
    report = gather()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
