"""Robustness of the file tools: loaders refuse NaN/Inf weights, non-finite outputs are errors,
psnr never scores NaN as perfect, huge images are refused with a --tile hint, refused pickles
name the forbidden global, calib/parity skip and name unreadable images, engines are diagnosed
before the GPU check, atomic writes keep earlier files."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from lcoan import CheckpointError, build_model, load_model
from lcoan.checkpoint import save_safetensors
from lcoan.safeio import AtomicFile, OutputError, SameFileError, atomic_write, refuse_overwrite

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}


def cli(module, *args, timeout=300):
    return subprocess.run([PY, "-m", module, *map(str, args)], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def one_error(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith(("error:", "lcoan.upscale: error:", "lcoan.evaluate: error:"))]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def png(path: Path, size=(20, 16), seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory):
    """A tiny model's weights with one NaN and one Inf, in every format a loader accepts."""
    from safetensors.torch import save_file
    from lcoan.checkpoint import to_official_state_dict
    folder = tmp_path_factory.mktemp("nan")
    model = build_model("tiny")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["groups.0.blocks.0.conv2.weight"][0, 0, 1, 1] = float("nan")
    state["tail_conv.bias"][1] = float("inf")
    meta = {"format": "lcoan", "config": json.dumps(model.config.to_dict())}
    save_file(state, str(folder / "release.safetensors"), metadata=meta)
    torch.save({"format": "lcoan", "config": model.config.to_dict(), "model": state}, folder / "last.pt")
    model.load_state_dict(state)
    official = to_official_state_dict(model)
    torch.save(official, folder / "public.pt")
    return folder


# --------------------------------------------------------------------------- point 3: loaders
@pytest.mark.parametrize("name, key", [("release.safetensors", "groups.0.blocks.0.conv2.weight"),
                                       ("last.pt", "groups.0.blocks.0.conv2.weight"),
                                       ("public.pt", "body.0.local_body.0.body.2.weight")])
def test_every_loader_refuses_non_finite_weights(nan_weights, name, key):
    with pytest.raises(CheckpointError) as info:
        load_model(nan_weights / name)
    msg = str(info.value)
    assert str(nan_weights / name) in msg and repr(key) in msg and "non-finite" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("module, extra", [("lcoan.upscale", ["-o", "{tmp}/out"]),
                                           ("export.to_onnx", ["--out", "{tmp}/x.onnx"]),
                                           ("lcoan.evaluate", ["--sets", "Set5"])])
def test_tools_refuse_nan_weights_in_one_line(nan_weights, tmp_path, module, extra):
    png(tmp_path / "a.png")
    args = ([str(tmp_path / "a.png")] if module == "lcoan.upscale" else [])
    args += [e.format(tmp=tmp_path) for e in extra] + ["--weights", str(nan_weights / "release.safetensors")]
    proc = cli(module, *args)
    assert proc.returncode == 2, proc.stderr
    line = one_error(proc)
    assert "release.safetensors" in line and "groups.0.blocks.0.conv2.weight" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_export_refuses_a_non_finite_model_and_calib_a_non_finite_graph(tmp_path):
    from calib.quantize import CalibrationError, quantize
    from export.errors import ExportError
    from export.to_onnx import check_finite_graph, export_onnx
    import onnx
    model = build_model("tiny")
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(ExportError, match="head.bias"):
        export_onnx(model, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    good = export_onnx(build_model("tiny"), tmp_path / "good.onnx")
    proto = onnx.load(str(good))
    init = next(i for i in proto.graph.initializer if len(i.float_data) or len(i.raw_data) > 64)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] = np.inf
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(tmp_path / "inf.onnx"))
    with pytest.raises(ExportError, match=init.name):
        check_finite_graph(onnx.load(str(tmp_path / "inf.onnx")), tmp_path / "inf.onnx")
    proc = cli("calib", "--onnx", tmp_path / "inf.onnx", "--images", tmp_path, "--out", tmp_path / "q.onnx")
    assert proc.returncode == 2 and init.name in one_error(proc)
    del CalibrationError, quantize


# --------------------------------------------------------------------------- point 3: outputs, metrics
def test_psnr_and_ssim_never_score_a_non_finite_image():
    from lcoan.metrics import psnr_y, ssim_y
    hr = torch.rand(3, 24, 24)
    for bad in (float("nan"), float("inf"), -float("inf")):
        sr = hr.clone()
        sr[1, 5, 5] = bad
        assert math.isnan(psnr_y(sr, hr)) and math.isnan(ssim_y(sr, hr))
    assert psnr_y(hr, hr) == math.inf  # a true perfect match is still inf
    batch = psnr_y(torch.stack([hr, torch.full_like(hr, float("nan"))]), torch.stack([hr, hr]))
    assert batch[0] == math.inf and math.isnan(batch[1])


def test_non_finite_output_is_an_error_for_that_image(tmp_path):
    """Finite weights that overflow float32: upscale names the image, writes nothing, exits 1."""
    model = build_model("tiny")
    with torch.no_grad():
        model.head.weight.mul_(1e30)
        model.body_conv.weight.mul_(1e30)
    save_safetensors(model, tmp_path / "huge.safetensors")
    png(tmp_path / "a.png")
    proc = cli("lcoan.upscale", tmp_path / "a.png", "-o", tmp_path / "out", "--weights",
               tmp_path / "huge.safetensors", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "a.png" in proc.stderr and "non-finite" in proc.stderr
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True
    from lcoan.data.imageio import write_image
    with pytest.raises(ValueError, match="non-finite"):
        write_image(tmp_path / "x.png", np.full((4, 4, 3), np.nan, np.float32))
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- point 7: huge images
@pytest.mark.slow
def test_huge_image_is_refused_fast_with_a_tile_hint_and_tiles_show_progress(tmp_path):
    from PIL import Image
    save_safetensors(build_model("tiny"), tmp_path / "tiny.safetensors")
    weights = ["--weights", str(tmp_path / "tiny.safetensors")]
    Image.new("RGB", (6000, 6000), (90, 120, 150)).save(tmp_path / "huge.png", compress_level=1)
    png(tmp_path / "small.png", size=(40, 40))
    proc = cli("lcoan.upscale", tmp_path / "huge.png", tmp_path / "small.png", "-o", tmp_path / "out",
               "--no-progress", *weights, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "huge.png" in proc.stderr and "--tile" in proc.stderr and "GiB" in proc.stderr
    assert (tmp_path / "out" / "small_x2.png").is_file() and not (tmp_path / "out" / "huge_x2.png").exists()
    # a memory budget (a container limit) refuses a moderate image, and the suggested tile passes
    env = {**ENV, "LCOAN_MAX_MEMORY_MB": "60"}
    png(tmp_path / "mid.png", size=(200, 160))
    proc = subprocess.run([PY, "-m", "lcoan.upscale", str(tmp_path / "mid.png"), "-o", str(tmp_path / "o2"), *weights],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "--tile" in proc.stderr, proc.stderr
    tile = int(proc.stderr.split("--tile")[1].split()[0].strip("()"))
    proc = subprocess.run([PY, "-m", "lcoan.upscale", str(tmp_path / "mid.png"), "-o", str(tmp_path / "o2"),
                           "--tile", str(tile), "--tile-overlap", "8", *weights],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tile 1/" in proc.stderr and (tmp_path / "o2" / "mid_x2.png").is_file()


# --------------------------------------------------------------------------- point 1: own input
@pytest.mark.slow
def test_upscale_refuses_its_own_input_through_links(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    png(folder / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    os.link(folder / "a.png", out / "a_x2.png")  # the output name is a hard link to the input
    before = (folder / "a.png").read_bytes()
    proc = cli("lcoan.upscale", folder / "a.png", "-o", out, "--no-progress")
    assert proc.returncode == 1 and "overwrite an input" in proc.stderr, proc.stderr
    assert (folder / "a.png").read_bytes() == before
    with pytest.raises(SameFileError):
        refuse_overwrite(out / "a_x2.png", [folder / "a.png"])
    with pytest.raises(SameFileError):
        refuse_overwrite(tmp_path / "imgs" / ".." / "imgs", [folder])


def test_atomic_write_failure_keeps_the_earlier_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("earlier")

    def failing(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt  # Ctrl-C mid-write
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, failing)
    assert target.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    atomic_write(target, "new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != oct(0o600)
    with pytest.raises(OutputError, match="cannot create the output folder"):
        AtomicFile(target / "sub" / "x.json")


# --------------------------------------------------------------------------- point 4: pickles, calib, parity
def test_refused_pickle_names_the_forbidden_global(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "evil.pt")
    msg = str(info.value)
    assert "forbidden global" in msg and "system" in msg and "weights_only" not in msg
    proc = cli("lcoan.upscale", tmp_path / "evil.pt", "-o", tmp_path / "o", "--weights", tmp_path / "evil.pt")
    assert proc.returncode == 2 and "forbidden global" in one_error(proc)
    assert "should-never-run" not in proc.stdout


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tiny_weights, tmp_path_factory):
    from export.to_onnx import export_onnx
    return export_onnx(tiny, tmp_path_factory.mktemp("onnx") / "tiny.onnx"), tiny_weights


def _image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        png(folder / f"img{i}.png", size=(32, 32), seed=i)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.mark.slow
def test_calib_skips_and_names_unreadable_images_then_exits_non_zero(tiny_onnx, tmp_path):
    onnx_path, _ = tiny_onnx
    folder = _image_folder(tmp_path)
    before = onnx_path.read_bytes()
    proc = cli("calib", "--onnx", onnx_path, "--images", folder, "--out", tmp_path / "q.onnx", "--num", "3",
               "--tile", "16x16")
    assert proc.returncode == 1, proc.stderr
    assert "broken.png" in proc.stderr and "empty.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "q.onnx").is_file()  # calibrated on the readable images
    proc = cli("calib", "--onnx", onnx_path, "--images", folder, "--out", onnx_path)  # its own input
    assert proc.returncode == 2 and "refusing to overwrite" in one_error(proc)
    assert onnx_path.read_bytes() == before


@pytest.mark.slow
def test_parity_skips_and_names_unreadable_images_then_exits_non_zero(tiny_onnx, tmp_path):
    onnx_path, weights = tiny_onnx
    folder = _image_folder(tmp_path)
    np.save(folder / "bad.npy", np.zeros((3, 4)))  # wrong shape
    proc = cli("export.parity", "--onnx", onnx_path, "--weights", weights, "--images", folder,
               "--json", tmp_path / "r.json")
    assert proc.returncode == 1, proc.stderr
    for name in ("broken.png", "empty.jpg", "bad.npy"):
        assert name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["images"] == 3
    before = weights.read_bytes()
    proc = cli("export.parity", "--onnx", onnx_path, "--weights", weights, "--images", folder, "--json", weights)
    assert proc.returncode == 2 and "refusing to overwrite" in one_error(proc)
    assert weights.read_bytes() == before


# --------------------------------------------------------------------------- point 9: engines
@pytest.mark.trt
def test_engine_checks_run_before_the_gpu_check(tmp_path):
    """A truncated engine and a broken sidecar are diagnosed here, on a machine without a GPU."""
    pytest.importorskip("tensorrt_rtx") if not _has_trt() else None
    from engine import cache
    from engine.errors import EngineError
    from engine.runtime import Engine, RuntimeUnavailable
    from export.to_onnx import export_onnx
    from engine.build import build_engine, make_profile
    onnx_path = export_onnx(build_model("tiny"), tmp_path / "tiny.onnx")
    engine = build_engine(onnx_path, tmp_path / "tiny.engine", precision="fp32", opt_level=0, log=lambda _m: None,
                          profile=make_profile("1x3x16x16", "1x3x16x16", "1x3x32x32")).engine
    good = engine.read_bytes()
    engine.write_bytes(good[: len(good) // 2])  # truncated copy
    with pytest.raises(EngineError, match="sha256") as info:
        Engine(engine)
    assert not isinstance(info.value, RuntimeUnavailable)
    engine.write_bytes(good)
    side = cache.sidecar_path(engine)
    side.write_text(side.read_text()[:40])  # broken JSON
    with pytest.raises(EngineError, match="broken") as info:
        Engine(engine)
    assert "no sidecar" not in str(info.value)
    reuse, reason = cache.lookup(engine, cache.EngineKey("x", "y", "z", "fp32", {}))
    assert not reuse and "broken" in reason
    side.unlink()
    with pytest.raises(EngineError, match="no sidecar"):
        Engine(engine)
    if not torch.cuda.is_available():  # intact engine and sidecar: only now does the GPU matter
        build_engine(onnx_path, engine, precision="fp32", opt_level=0, log=lambda _m: None, force=True,
                     profile=make_profile("1x3x16x16", "1x3x16x16", "1x3x32x32"))
        with pytest.raises(RuntimeUnavailable, match="GPU"):
            Engine(engine)


def _has_trt() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorrt") is not None


# --------------------------------------------------------------------------- tiny images
def test_tiny_image_is_mirrored_out_so_its_colour_holds(tiny):
    """A 1x1 image runs as the 16x16 of its colour (mirror padding), not with zero borders."""
    from lcoan.upscale import MIN_SIDE, upscale_array
    colour = np.array([0.8, 0.3, 0.1], np.float32)
    one, _ = upscale_array(tiny, np.tile(colour, (1, 1, 1)))
    full, _ = upscale_array(tiny, np.tile(colour, (MIN_SIDE, MIN_SIDE, 1)))
    assert one.shape == (2, 2, 3)
    np.testing.assert_allclose(one, full[MIN_SIDE - 2:MIN_SIDE, MIN_SIDE - 2:MIN_SIDE], atol=1e-6)
    odd, _ = upscale_array(tiny, np.random.default_rng(0).random((3, 5, 3), dtype=np.float32))
    assert odd.shape == (6, 10, 3) and np.isfinite(odd).all()
