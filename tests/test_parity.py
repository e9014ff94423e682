"""Parity reports: the comparison API, the CLI's exit codes, and a Polygraphy CLI run."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("polygraphy")

from PIL import Image  # noqa: E402

from lcoan import build_model  # noqa: E402
from lcoan.checkpoint import save_safetensors  # noqa: E402

from verify import parity  # noqa: E402
from export.errors import ExportError  # noqa: E402
from export.to_onnx import export_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POLYGRAPHY = Path(sys.executable).with_name("polygraphy")


def _sample(h=6, w=5, seed=0, hr=True):
    rng = np.random.default_rng(seed)
    lr = rng.random((1, 3, h, w), dtype=np.float32)
    return parity.Sample(f"s{seed}", lr, rng.random((1, 3, 2 * h, 2 * w), dtype=np.float32) if hr else None)


def _upscale(x):
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


def test_compare_identical_runners_pass_with_infinite_drift():
    report = parity.compare(_upscale, _upscale, [_sample(seed=1), _sample(seed=2)], scale=2)
    assert report.passed
    assert all(r.drift_db == math.inf and r.max_abs == 0 for r in report.images)
    assert report.images[0].reference_psnr_y == report.images[0].candidate_psnr_y
    assert json.loads(json.dumps(report.to_dict()))["summary"]["min_drift_db"] == "inf"
    assert "PASS" in report.table()


def test_compare_fails_beyond_thresholds():
    noisy = lambda x: _upscale(x) + 1e-2  # noqa: E731 - about 40 dB
    assert not parity.compare(_upscale, noisy, [_sample()], scale=2).passed
    small = lambda x: _upscale(x) + 5e-5  # noqa: E731 - about 86 dB
    assert parity.compare(_upscale, small, [_sample()], scale=2).passed
    mid = lambda x: _upscale(x) + 2e-3  # noqa: E731 - about 54 dB: FP16 yes, FP32 no
    assert parity.compare(_upscale, mid, [_sample()], scale=2, precision="fp16").passed
    assert not parity.compare(_upscale, mid, [_sample()], scale=2, precision="fp32").passed


def test_compare_rejects_non_rgb_or_non_4d_input():
    bad = parity.Sample("grey", np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ExportError, match=r"4-D \[N, 3, H, W\]"):
        parity.compare(_upscale, _upscale, [bad], scale=2)
    with pytest.raises(ExportError, match=r"\(3, 4, 4\)"):
        parity.check_input("chw", np.zeros((3, 4, 4), np.float32))


def test_drift_psnr():
    a = np.zeros((1, 3, 4, 4), np.float32)
    assert parity.drift_psnr(a, a) == math.inf
    assert parity.drift_psnr(a + 0.1, a) == pytest.approx(20.0)


# --------------------------------------------------------------------------- CLI + Polygraphy
def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((arr[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    weights = root / "tiny_x2.safetensors"
    save_safetensors(model, weights)
    onnx_path = export_onnx(model, root / "tiny.onnx")
    plugin_path = export_onnx(model, root / "tiny_plugin.onnx", sort="plugin")
    # EDSR layout, so that the HR images are found: <set>/LR_bicubic/X2/<name>x2.png, <set>/HR/<name>.png
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (12, 10), "b": (20, 17)}.items():
        hr = rng.random((1, 3, 2 * h, 2 * w)).astype(np.float32)
        _write_png(root / "Set" / "HR" / f"{name}.png", hr)
        _write_png(root / "Set" / "LR_bicubic" / "X2" / f"{name}x2.png", hr[:, :, ::2, ::2])
    return dict(root=root, weights=weights, onnx=onnx_path, plugin=plugin_path,
                images=root / "Set" / "LR_bicubic" / "X2")


def _parity(*args):
    return subprocess.run([sys.executable, "-m", "export.parity", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=150)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["onnx", "plugin"])
def test_parity_cli_passes_and_writes_json(setup, form, tmp_path):
    out = tmp_path / "report.json"
    proc = _parity("--weights", setup["weights"], "--onnx", setup[form], "--images", setup["images"],
                   "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["summary"]["passed"] and report["summary"]["images"] == 2
    assert [r["name"] for r in report["images"]] == ["a", "b"]
    for r in report["images"]:
        assert r["reference_psnr_y"] is not None and r["candidate_psnr_y"] is not None
        assert r["max_abs"] <= 1e-3


@pytest.mark.slow
def test_parity_cli_fails_for_other_weights(setup, tmp_path):
    torch.manual_seed(123)
    other = tmp_path / "other.safetensors"
    save_safetensors(build_model("tiny").eval(), other)
    proc = _parity("--weights", other, "--onnx", setup["onnx"], "--images", setup["images"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout


@pytest.mark.slow
def test_parity_cli_rejects_weights_of_another_scale(setup, tmp_path):
    w3 = tmp_path / "tiny_x3.safetensors"
    save_safetensors(build_model("tiny", scale=3), w3)
    proc = _parity("--weights", w3, "--onnx", setup["onnx"], "--images", setup["images"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "x3" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_polygraphy_cli_parity(setup, tmp_path):
    if not POLYGRAPHY.exists():
        pytest.skip("polygraphy command not installed")
    poly = tmp_path / "poly"
    proc = _parity("--weights", setup["weights"], "--onnx", setup["onnx"], "--images", setup["images"],
                   "--polygraphy-dir", poly)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inputs, outputs = poly / "inputs.json", poly / "pytorch_outputs.json"
    assert inputs.is_file() and outputs.is_file()
    cmd = parity.polygraphy_command(setup["onnx"], inputs, outputs)
    cmd[0] = str(POLYGRAPHY)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "PASSED" in run.stdout + run.stderr

    # the same check fails on outputs that are off by 2e-3 (twice the FP32 atol and rtol)
    from polygraphy.comparator import RunResults
    results = RunResults.load(str(outputs))
    for _, iterations in results.items():
        for it in iterations:
            it["sr"] = it["sr"] + 2e-3
    bad = tmp_path / "bad.json"
    results.save(str(bad))
    cmd[cmd.index(str(outputs))] = str(bad)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert run.returncode != 0


def test_pass_rules_are_polygraphys_rules():
    """The report's verdict and Polygraphy's ``CompareFunc.simple`` agree, case for case, for the
    elementwise FP32 rule and the quantile FP16 rule."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults, SimpleCompareFunc
    rng = np.random.default_rng(5)
    ref = rng.random((1, 3, 32, 32), dtype=np.float32)
    ref[0, 0, 0, :2] = 0.0  # Polygraphy's epsilon for zeros
    verdicts = {}
    for precision in ("fp32", "fp16"):
        rule = parity.THRESHOLDS[precision]
        cases = {"exact": ref.copy(), "within atol": ref + 0.9 * rule.atol,
                 "beyond atol, within rtol": ref * (1 + 0.5 * rule.rtol) + 0.0,
                 "one element off": ref.copy(), "one in 500 off": ref.copy(), "nan": ref.copy()}
        cases["beyond atol, within rtol"][0, 0, 1, 1] = 5.0 * (1 + 0.5 * rule.rtol)
        ref_big = ref.copy()
        ref_big[0, 0, 1, 1] = 5.0
        cases["one element off"][0, 1, 2, 3] += 3 * rule.atol
        cases["one in 500 off"].reshape(-1)[::500] += 3 * rule.atol
        cases["nan"][0, 2, 0, 0] = np.nan
        for name, cand in cases.items():
            reference = ref_big if name == "beyond atol, within rtol" else ref
            results = RunResults([("onnxrt", [IterationResult({"sr": cand}, runner_name="onnxrt")]),
                                  ("pytorch", [IterationResult({"sr": reference}, runner_name="pytorch")])])
            poly = bool(Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(**rule.compare_func_args())))
            verdicts[precision, name] = rule.passes(cand, reference)
            assert verdicts[precision, name] == poly, (precision, name)
        assert rule.passes(cases["within atol"], ref) and not rule.passes(cases["nan"], ref)
    assert not verdicts["fp32", "one element off"] and verdicts["fp16", "one element off"]
    assert not verdicts["fp16", "one in 500 off"]  # 0.2% of the elements: beyond the 99.9% quantile


@pytest.mark.slow
def test_parity_cli_refuses_weights_of_another_model(setup, tmp_path):
    small = tmp_path / "tiny_w8.safetensors"
    save_safetensors(build_model("tiny", window_size=8).eval(), small)
    proc = _parity("--weights", small, "--onnx", setup["onnx"], "--images", setup["images"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "window_size: 16 in the graph, 8 in the weights" in proc.stderr and "--weights" in proc.stderr


def test_graph_without_weights_is_compared_with_the_bundled_weights_it_came_from():
    import lcoan
    from lcoan.pretrained import list_pretrained
    for name in list_pretrained():
        config = json.loads(json.dumps(lcoan.load_model(name).config.to_dict()))
        assert parity._bundled_weights_of(config) == name
    assert parity._bundled_weights_of(json.loads(json.dumps(build_model("tiny").config.to_dict()))) is None
    assert parity._bundled_weights_of(None) is None
