"""lcoan-doctor (pipeline/doctor.py): what it finds on this machine (no GPU, TensorRT-RTX installed,
PyAV's NVIDIA codecs listed but not opening), the backend it names for each tool and why, and the
install line for each missing path. The probes are real: nothing is faked."""
from __future__ import annotations

import json

import pytest

from pipeline import doctor


@pytest.fixture(scope="module")
def report() -> dict:
    """``python -m pipeline.doctor --json``, in this process (torch is loaded already)."""
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert doctor.main(["--json"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def this_machine(report):
    """The report, where this machine is CI's kind: no GPU, TensorRT-RTX, no NVENC."""
    if report["gpu"]["found"]:
        pytest.skip(f"this test describes a machine without a GPU; this one has {report['gpu']['name']}")
    if not report["tensorrt"]["found"]:
        pytest.skip("TensorRT-RTX is not installed here (the trt extra)")
    return report


def test_finds_what_this_machine_has(this_machine):
    r = this_machine
    assert r["torch"]["found"] and r["torch"]["cuda_available"] is False
    assert r["tensorrt"]["flavour"] == "tensorrt_rtx" and r["tensorrt"]["builds"] and not r["tensorrt"]["runs"]
    assert "no CUDA GPU" in r["tensorrt"]["why"]
    assert r["gpu"] == {"found": False, "name": None, "compute_capability": None}
    assert "CPUExecutionProvider" in r["onnxruntime"]["providers"]
    codecs = r["pyav"]["codecs"]
    assert set(codecs) == {"h264_cuvid", "hevc_cuvid", "h264_nvenc", "hevc_nvenc"}
    assert not codecs["h264_nvenc"]["opens"] and "does not open here" in codecs["h264_nvenc"]["why"]


def test_names_each_backend_and_why(this_machine):
    tools = this_machine["tools"]
    assert tools["lcoan-app (video), make demo"]["backend"] == "onnxruntime-cpu"
    assert "no CUDA GPU" in tools["lcoan-app (video), make demo"]["why"]
    assert tools["lcoan-build-engine"]["backend"].startswith("tensorrt_rtx ")
    assert "CPU-only" in tools["lcoan-build-engine"]["backend"]
    assert tools["lcoan-train / lcoan-upscale / lcoan-evaluate"]["backend"] == "torch cpu"
    assert tools["app encode"]["backend"] == "libx264 (software)" and "h264_nvenc" in tools["app encode"]["why"]
    assert tools["app decode"]["backend"].startswith("software")
    assert this_machine["demo"]["backend"] == "onnxruntime-cpu"


def test_each_missing_path_has_a_reason_and_an_install_line(this_machine):
    missing = {m["path"]: m for m in this_machine["missing"]}
    for path in ("GPU", "torch CUDA", "TensorRT engines at run time", "ONNX Runtime CUDA", "NVENC (PyAV)",
                 "NVDEC (PyAV)"):
        assert path in missing, sorted(missing)
        assert missing[path]["why"] and missing[path]["install"]
    assert "TORCH=cuda" in missing["torch CUDA"]["install"]
    assert "onnxruntime-gpu" in missing["ONNX Runtime CUDA"]["install"]
    text = doctor.format_report(this_machine)
    assert "tensorrt_rtx" in text and "install: `make setup TORCH=cuda`" in text and "h264_nvenc" in text


def test_rtx_on_a_gpu_it_cannot_run_on_falls_back_to_torch_cuda(this_machine):
    # an H100 (sm 9.0) with TensorRT-RTX: the real trt_info() of the installed RTX, a GPU described
    h100 = {"found": True, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    torch_cuda = {"found": True, "version": "2.13.0", "cuda_build": "13.0", "cuda_available": True}
    trt = doctor.probe_tensorrt(h100, torch_cuda)
    assert trt["builds"] and not trt["runs"] and "compute capability 9.0" in trt["why"]
    backend, why = doctor.demo_choice({"tensorrt": trt, "torch": torch_cuda, "gpu": h100})
    assert backend == "torch-cuda" and "H100" in why and "9.0" in why
    ada = {"found": True, "name": "NVIDIA L4", "compute_capability": "8.9"}
    assert doctor.demo_choice({"tensorrt": doctor.probe_tensorrt(ada, torch_cuda), "torch": torch_cuda,
                               "gpu": ada})[0] == "tensorrt"


def test_demo_backend_prints_one_word_and_the_reason(this_machine, capsys):
    assert doctor.main(["--demo-backend"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "onnxruntime-cpu"
    assert err.startswith("demo: the app runs on onnxruntime-cpu: ") and err.count("\n") == 1


def test_install_lines_on_a_jetson_name_jetpack():
    lines = doctor.install_lines(jetson=True)
    assert "python3-libnvinfer" in lines["tensorrt"] and "JetPack" in lines["torch-cuda"]
    x86 = doctor.install_lines(jetson=False)
    assert "tensorrt-rtx-cu13" in x86["tensorrt"] and "Dockerfile.x86" in x86["tensorrt"]
    assert "TORCH=cuda" in x86["torch-cuda"]


def test_jetson_check_off_a_jetson_says_so_and_exits_0(tmp_path, capsys, monkeypatch):
    from benchmarks import jetson_check
    monkeypatch.setattr(doctor, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")  # absent: this is no Jetson
    out = tmp_path / "jetson_check.json"
    assert jetson_check.main(["--out", str(out)]) == 0
    assert "not a Jetson" in capsys.readouterr().out and not out.exists()
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n")
    assert doctor.jetson_release() == "R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic"
