"""The weights table, and a non-editable install that finds the bundled weights from outside the repo."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import lcoan
from conftest import REPO
from lcoan import CheckpointError
from lcoan.pretrained import DEFAULTS, PRETRAINED, get_pretrained, list_pretrained, resolve_weights


def test_table_entries_are_complete_and_default_is_bundled() -> None:
    from lcoan.presets import PRESETS
    for cfg in PRETRAINED.values():
        assert cfg.preset in PRESETS and cfg.scale in (2, 3, 4), cfg
        assert (REPO / cfg.recipe).is_file(), cfg.recipe
        # scores are measured on the file: an entry without its file has none
        scores = [v for pair in cfg.scores.values() for v in pair]   # all four sets
        assert all(s is not None for s in scores) if cfg.available else all(s is None for s in scores), cfg
    assert all(get_pretrained(name).available for name in DEFAULTS.values())
    edge = get_pretrained("edge_x2")
    assert (edge.set5_psnr, edge.set14_psnr) == (37.18, 32.82)
    assert lcoan.default_weights(2) == edge.path
    assert list_pretrained() == [n for n, c in PRETRAINED.items() if c.path.is_file()]


def test_weights_names_and_paths() -> None:
    model = lcoan.load_model("edge_x2")
    assert model.scale == 2 and model.config.n_feats == 64
    assert resolve_weights(None) == resolve_weights("edge_x2") == get_pretrained("edge_x2").path
    assert resolve_weights(str(get_pretrained("edge_x2").path)) == get_pretrained("edge_x2").path
    assert resolve_weights("some/dir/w.safetensors") == Path("some/dir/w.safetensors")  # loading names it
    with pytest.raises(CheckpointError, match=r"^edge_x9: no such weights name or file; names: edge_x2"):
        resolve_weights("edge_x9")
    with pytest.raises(CheckpointError, match=r"^x3: no bundled weights for x3; pass --weights"):
        resolve_weights(None, 3)
    with pytest.raises(CheckpointError, match="weights are for x2, not x4"):
        resolve_weights("edge_x2", 4)


def test_declared_but_missing_weights_are_one_line(monkeypatch, tmp_path: Path) -> None:
    import lcoan.pretrained as pretrained
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)  # nothing bundled here
    assert list_pretrained() == []
    with pytest.raises(CheckpointError, match=r"^realtime_x2: weights declared but not bundled .* "
                                              r"train them with configs/realtime_x2_cos.yaml$"):
        get_pretrained("realtime_x2")


def test_cli_takes_a_table_name(tmp_path: Path, capsys) -> None:
    from PIL import Image
    src = tmp_path / "lr.png"
    Image.new("RGB", (20, 16), (120, 60, 30)).save(src)
    out = tmp_path / "sr"
    proc = subprocess.run([sys.executable, "-m", "lcoan.upscale", str(src), "-o", str(out), "--weights", "edge_x2",
                           "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and len(list(out.glob("*.png"))) == 1, proc.stderr
    from lcoan.upscale import main
    assert main([str(src), "-o", str(tmp_path / "bad"), "--weights", "edge_x9"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edge_x9: no such weights name or file" in err[0], err


# Sources a wheel is built from: the packages of pyproject's packages.find, the metadata files.
_WHEEL_SOURCES = ("lcoan", "export", "calib", "engine", "app", "plugins", "serve", "pipeline", "verify", "benchmarks",
                  "pyproject.toml", "README.md")


@pytest.mark.slow
def test_non_editable_install_finds_bundled_weights(tmp_path: Path) -> None:
    """A wheel built from a copy of the tree, installed into a fresh venv, loads ``edge_x2`` from its
    own site-packages. torch and the other dependencies come from this venv (a .pth line), not PyPI."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "*.so", "*.o")
    for name in _WHEEL_SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name, **(
            {"ignore": ignore, "symlinks": True} if (REPO / name).is_dir() else {}))
    wheels = tmp_path / "wheels"
    run = lambda *cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)  # noqa: E731
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                str(src), cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next(wheels.glob("lcoan_edge-*.whl"))
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    site = Path(run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    installed = run(sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel))
    if "no such option: --python" in installed.stderr:  # pip < 22.3: install straight into the venv's site
        installed = run(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # torch, numpy, safetensors from this venv; lines in a .pth are appended after the venv's own
    # site-packages, and the editable install's finder (a .pth of its own) is not processed from there.
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = textwrap.dedent("""
        import lcoan, torch
        from lcoan.pretrained import get_pretrained
        cfg = get_pretrained("edge_x2")
        model = lcoan.load_model(lcoan.default_weights(2))
        with torch.inference_mode():
            y = model(torch.rand(1, 3, 12, 10))
        print(lcoan.__file__, cfg.path, tuple(y.shape))
    """)
    out = run(str(py), "-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    module, weights, shape = out.stdout.split(maxsplit=2)
    assert Path(module).is_relative_to(site) and Path(weights).is_relative_to(site), out.stdout
    assert Path(weights).is_file() and not Path(weights).is_symlink()
    assert shape.strip() == "(1, 3, 24, 20)"
    # the console scripts of [project.scripts] come with the wheel and run from its site-packages
    helped = run(str(venv / "bin" / "lcoan-parity"), "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "python -m export.parity" in helped.stdout, helped.stdout + helped.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", list_pretrained())
def test_bundled_weights_score_what_the_table_says_and_beat_bicubic(name: str) -> None:
    from conftest import shared_path
    from lcoan.evaluate import evaluate
    cfg = get_pretrained(name)
    result = evaluate(lcoan.load_model(name), shared_path("data", "benchmark"), ["Set5"], scale=cfg.scale)
    scores = result["sets"]["Set5"]
    assert scores["model"]["psnr"] == pytest.approx(cfg.set5_psnr, abs=0.006)
    assert scores["model"]["psnr"] - scores["bicubic"]["psnr"] >= 3.0


def test_documented_weights_table_matches_the_table() -> None:
    text = (REPO / "docs" / "training.md").read_text()
    for name in list_pretrained():
        cfg = get_pretrained(name)
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        cells = " | ".join("—" if p is None else f"{p:.2f} / {s:.4f}" for p, s in cfg.scores.values())
        assert f"| {cells} |" in row, row
        assert f"`{cfg.file}`" in row and f"`{cfg.recipe}`" in row
