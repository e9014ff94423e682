"""Make the project's venv for the machine it is on: what ``make setup`` runs.

    python3 tools/setup_env.py [--venv .venv] [--print-plan] [--json]

It creates the venv, asks the venv's own python what it can already import (torch and its CUDA,
TensorRT through ``engine.trt``, PyGObject, OpenCV, ONNX Runtime), decides, prints every decision
with its reason, then installs. ``--print-plan`` stops before installing anything (the venv is
still made, without pip, so that the plan is the one a real run would follow); ``--json`` prints
the plan as JSON instead of lines.

Environment (the Makefile passes these through):

* ``TORCH``: ``auto`` (default) keeps a torch the venv can import and installs the CPU pin
  ``torch==$TORCH_PIN`` only where there is none; ``keep`` never installs torch; ``cpu`` installs
  the CPU pin even over another torch; ``cuda`` installs PyPI's own ``torch==$TORCH_PIN``, whose
  Linux wheels are the CUDA build (CUDA 13.0 for 2.13.0: it depends on ``nvidia-*-cu13``);
  ``cuXYZ`` (``cu126``, ``cu128``, ...) installs that CUDA build, from PyPI where it is PyPI's
  (``cu130``), else from PyTorch's own index for that tag.
* ``SYSTEM_SITE=1`` makes the venv with ``--system-site-packages``; on a Jetson
  (``/etc/nv_tegra_release`` exists) that is the default (``SYSTEM_SITE=0`` turns it off), so that
  JetPack's ``tensorrt``, ``cv2``, ``gi`` and NVIDIA's torch wheel are the ones used. A package the
  system already provides is then pinned to its installed version (a pip constraint), and the
  extras that would bring a second copy (``trt``: TensorRT-RTX; ``gst``: PyGObject) are left out.
* ``EXTRAS`` (default ``export,trt,app,dev,serve``), ``TORCH_PIN`` (default 2.13.0),
  ``GST_APT=0`` (no apt-get), ``LCOAN_TEGRA_RELEASE`` (the file that marks a Jetson; for tests).

Only the standard library: it runs before anything is installed, with JetPack 6's Python 3.10 too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_PIN = "2.13.0"
# PyPI's torch wheels for Linux are built for one CUDA (2.13.0: 13.0); other tags live on PyTorch's
# own index, which is the only place that hosts them by name.
PYPI_TORCH_CUDA = "cu130"
TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
DEFAULT_EXTRAS = "export,trt,app,dev,serve"
TEGRA_RELEASE = "/etc/nv_tegra_release"
# GStreamer for the app's gst:/csi:/rtsp:// inputs and outputs (app/gst.py) is a system library;
# the -dev packages are what PyGObject (the gst extra) builds against.
GST_APT = ("gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
           "gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gir1.2-gstreamer-1.0 "
           "gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 libgirepository1.0-dev libcairo2-dev "
           "pkg-config").split()
JETPACK_TORCH = ("NVIDIA's torch wheel for your JetPack (docs/jetson.md, 'Setup'), then run setup again; "
                 "or TORCH=cpu for PyPI's build")

# What the venv's python can import, as JSON on stdout. TensorRT is asked through engine.trt (the
# project's one import point), read from the checkout since the project is not installed yet.
PROBE = r"""
import importlib, importlib.metadata as md, json, sys
sys.path.insert(0, sys.argv[1])
out = {"python": sys.version.split()[0], "prefix": sys.prefix}
def dists(module):
    return sorted({d for d in md.packages_distributions().get(module, [])})
def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None
try:
    import torch
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    out["torch"] = {"version": str(getattr(torch, "__version__", "?")), "cuda": cuda, "file": torch.__file__,
                    "dists": {d: version(d) for d in dists("torch")}}
except Exception as exc:
    out["torch"] = None
    out["torch_error"] = f"{type(exc).__name__}: {exc}"[:200]
try:
    from engine.trt import import_trt, trt_info
    info = trt_info(import_trt())
    out["tensorrt"] = {"flavour": info.flavour, "version": info.version}
except Exception as exc:
    out["tensorrt"] = None
for key, module in (("gi", "gi"), ("cv2", "cv2"), ("onnxruntime", "onnxruntime")):
    try:
        mod = importlib.import_module(module)
        if key == "gi":
            mod.require_version("Gst", "1.0")
        out[key] = {"file": mod.__file__, "dists": {d: version(d) for d in dists(module)}}
    except Exception:
        out[key] = None
print(json.dumps(out))
"""


class SetupError(Exception):
    """A decision that needs the user; one line."""


def say(msg: str) -> None:
    print(f"setup: {msg}", flush=True)


def env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    return value not in ("0", "no", "false", "off")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(python: str, venv: Path, system_site: bool, with_pip: bool) -> list[str]:
    """Make the venv, or set its system-site switch; returns what was done."""
    done = []
    if not venv_python(venv).exists():
        cmd = [python, "-m", "venv", *(["--system-site-packages"] if system_site else []),
               *([] if with_pip else ["--without-pip"]), str(venv)]
        subprocess.run(cmd, check=True)
        done.append(shlex.join(cmd))
    cfg = venv / "pyvenv.cfg"
    text = cfg.read_text()
    want = "true" if system_site else "false"
    new = re.sub(r"(?m)^include-system-site-packages\s*=.*$", f"include-system-site-packages = {want}", text)
    if new != text:  # the venv reads this line at start-up: no need to make it again
        cfg.write_text(new)
        done.append(f"{cfg}: include-system-site-packages = {want}")
    if with_pip and subprocess.run([str(venv_python(venv)), "-c", "import pip"], capture_output=True).returncode:
        cmd = [str(venv_python(venv)), "-m", "ensurepip", "-q"]
        subprocess.run(cmd, check=True)
        done.append(shlex.join(cmd))
    return done


def probe(venv: Path) -> dict:
    res = subprocess.run([str(venv_python(venv)), "-c", PROBE, str(REPO)], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONHOME"})
    if res.returncode:
        raise SetupError(f"{venv_python(venv)} could not be probed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def plan_torch(mode: str, found: dict | None, pin: str, jetson: bool) -> dict:
    """{action: keep|install, reason, args: pip arguments}: which torch the venv will run."""
    have = f"torch {found['version']} ({'CUDA ' + found['cuda'] if found.get('cuda') else 'CPU build'}, " \
           f"{found['file']})" if found else None
    if mode in ("auto", "keep") and found:
        if _major_minor(found["version"]) < (2, 3):
            raise SetupError(f"{have} is older than 2.3, which the project needs (stable sort, weights_only "
                             f"loading); install a newer build, or TORCH=cpu for torch=={pin}")
        return {"action": "keep", "reason": f"keep {have}: TORCH={mode} keeps an importable torch", "args": []}
    if mode == "keep":
        raise SetupError("TORCH=keep but the venv's python cannot import torch; install your torch first "
                         "(SYSTEM_SITE=1 if it is the system's), or leave TORCH unset for the CPU pin")
    if jetson and mode in ("auto", "cuda"):
        raise SetupError(f"no torch importable on this Jetson and PyPI has no JetPack build: install {JETPACK_TORCH}")
    if mode in ("auto", "cpu"):
        why = "no torch importable in the venv" if mode == "auto" else "TORCH=cpu"
        # this is the CPU build where the package index offers torch==PIN+cpu (CI's does); PyPI's
        # own Linux wheel is the CUDA build. A CUDA torch of the same version would satisfy the pin:
        # reinstall it, torch alone
        swap = ["--force-reinstall", "--no-deps"] if found and found.get("cuda") else []
        return {"action": "install", "reason": f"install the CPU pin torch=={pin}: {why}",
                "args": [f"torch=={pin}", *swap]}
    tag = PYPI_TORCH_CUDA if mode == "cuda" else mode
    if not re.fullmatch(r"cu\d{3}", tag):
        raise SetupError(f"TORCH={mode!r}: expected auto, keep, cpu, cuda or a CUDA tag such as cu126")
    if tag == PYPI_TORCH_CUDA:
        # '===' is exact: it skips local builds such as 2.13.0+cpu that a find-links folder may offer
        return {"action": "install", "reason": f"install PyPI's torch {pin}, the {tag} build (TORCH={mode})",
                "args": [f"torch==={pin}"]}
    index = TORCH_INDEX.format(tag=tag)
    return {"action": "install", "reason": f"install torch {pin} for {tag} from PyTorch's index {index} "
                                           f"(PyPI hosts only the {PYPI_TORCH_CUDA} build; TORCH={mode})",
            "args": [f"torch=={pin}", "--index-url", index]}


def from_system(found: dict, key: str) -> bool:
    """Whether ``key`` is importable from outside the venv (the system's site-packages)."""
    item = found.get(key)
    return bool(item) and not Path(item["file"]).resolve().is_relative_to(Path(found["prefix"]).resolve())


def plan_extras(extras: list[str], found: dict, jetson: bool) -> tuple[list[str], list[str]]:
    """The extras to install, and why any was left out."""
    notes, keep = [], []
    trt = found.get("tensorrt")
    for extra in extras:
        if extra == "trt" and trt and trt["flavour"] == "tensorrt":
            notes.append(f"trt extra left out: NVIDIA TensorRT {trt['version']} is importable and engine.trt "
                         "prefers it to TensorRT-RTX")
        elif extra == "trt" and jetson:
            notes.append("trt extra left out: TensorRT-RTX has no Jetson build; JetPack's TensorRT is the one "
                         "(`sudo apt install python3-libnvinfer`)")
        elif extra == "gst" and from_system(found, "gi"):
            notes.append(f"gst extra left out: the system's PyGObject ({found['gi']['file']}) is importable")
        else:
            keep.append(extra)
    return keep, notes


def plan_pins(found: dict, torch_plan: dict) -> list[str]:
    """pip constraints that stop the install from replacing what is kept (a JetPack or CUDA torch,
    the system's OpenCV, ONNX Runtime, PyGObject): pip then fails instead of swapping builds."""
    pins = []
    keys = ("torch", "cv2", "onnxruntime", "gi") if torch_plan["action"] == "keep" else ("cv2", "onnxruntime", "gi")
    for key in keys:
        item = found.get(key)
        if item and (key == "torch" or from_system(found, key)):
            pins += [f"{dist}=={ver}" for dist, ver in sorted(item.get("dists", {}).items()) if ver]
    return pins


def make_plan(args, found: dict, jetson: bool, system_site: bool) -> dict:
    torch_plan = plan_torch(os.environ.get("TORCH", "auto").strip() or "auto", found.get("torch"),
                            os.environ.get("TORCH_PIN", TORCH_PIN), jetson)
    requested = [e for e in os.environ.get("EXTRAS", DEFAULT_EXTRAS).replace(" ", "").split(",") if e]
    extras, notes = plan_extras(requested + ["gst"], found, jetson)
    ort = found.get("onnxruntime")
    if ort and "export" in extras and "onnxruntime" not in ort.get("dists", {}) and ort.get("dists"):
        notes.append(f"{', '.join(ort['dists'])} provides onnxruntime: the export extra adds PyPI's onnxruntime "
                     "beside it; reinstall yours afterwards if its providers go missing")
    gi_needed = "gst" in extras
    apt = (gi_needed and env_flag("GST_APT") is not False and shutil.which("apt-get") is not None
           and hasattr(os, "geteuid") and os.geteuid() == 0)
    return {"venv": str(args.venv), "jetson": jetson, "system_site": system_site, "found": found,
            "torch": torch_plan, "extras": [e for e in extras if e != "gst"], "gst": gi_needed,
            "apt": GST_APT if apt else [], "pins": plan_pins(found, torch_plan), "notes": notes}


def print_plan(plan: dict, tegra: str) -> None:
    found = plan["found"]
    say(f"platform: {platform.system()} {platform.machine()}, python {found['python']}, "
        + (f"Jetson ({tegra})" if plan["jetson"] else f"not a Jetson (no {tegra})"))
    say(f"venv {plan['venv']}: " + ("--system-site-packages: the system's torch, TensorRT, cv2 and gi are used"
                                    if plan["system_site"] else "plain (SYSTEM_SITE=1 to use the system's packages)"))
    trt = found.get("tensorrt")
    say("TensorRT: " + (f"{trt['flavour']} {trt['version']} (through engine.trt)" if trt else "none importable yet"))
    say(f"torch: {plan['torch']['reason']}")
    say(f"extras: {','.join(plan['extras']) or 'none'}")
    for note in plan["notes"]:
        say(note)
    if plan["pins"]:
        say(f"pins (kept as they are): {' '.join(plan['pins'])}")
    if plan["gst"]:
        say("GStreamer: " + ("apt-get install of the packages missing among GST_APT, then " if plan["apt"] else
                             "no apt-get as root here: install them yourself; ")
            + "the gst extra (PyGObject) if gobject-introspection and cairo headers are found")


def run(cmd: list[str]) -> None:
    say("run: " + shlex.join(cmd))
    subprocess.run(cmd, check=True)


def install_gstreamer(plan: dict) -> None:
    """Today's rule: the apt packages as root where some are missing, then PyGObject if it can build."""
    missing = subprocess.run(["dpkg", "-s", *GST_APT], capture_output=True).returncode if shutil.which("dpkg") else 1
    if missing and plan["apt"]:
        say("apt-get install GStreamer 1.x and the PyGObject build headers")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *GST_APT], check=True, stdout=subprocess.DEVNULL, env=env)
    elif missing:
        say(f"not root or no apt-get: GStreamer not installed (needs: {' '.join(GST_APT)}); the GStreamer tests will skip")
    if subprocess.run(["pkg-config", "--exists", "gobject-introspection-1.0", "cairo"],
                      capture_output=True).returncode if shutil.which("pkg-config") else 1:
        say("no gobject-introspection/cairo headers: PyGObject not installed; the GStreamer tests will skip")
        return
    run(pip_cmd(plan, "-e", f"{REPO}[gst]"))


def pip_cmd(plan: dict, *args: str) -> list[str]:
    cmd = [str(venv_python(Path(plan["venv"]))), "-m", "pip", "install", "-q", *args]
    if plan["pins"]:
        cmd += ["-c", str(Path(plan["venv"]) / "lcoan-constraints.txt")]
    return cmd


def execute(plan: dict) -> None:
    if plan["pins"]:
        Path(plan["venv"], "lcoan-constraints.txt").write_text(
            "# what setup found and kept (tools/setup_env.py); pip fails rather than replace these\n"
            + "\n".join(plan["pins"]) + "\n")
    if plan["torch"]["action"] == "install":
        run(pip_cmd(plan, *plan["torch"]["args"]))
    target = f"{REPO}[{','.join(plan['extras'])}]" if plan["extras"] else str(REPO)
    run(pip_cmd(plan, "-e", target))
    if plan["gst"]:
        install_gstreamer(plan)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 tools/setup_env.py", description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=REPO / ".venv", help="the venv folder (default: .venv)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter the venv is made from")
    ap.add_argument("--print-plan", action="store_true", help="decide and print, install nothing")
    ap.add_argument("--json", action="store_true", help="with --print-plan: the plan as JSON")
    args = ap.parse_args(argv)
    tegra = os.environ.get("LCOAN_TEGRA_RELEASE", TEGRA_RELEASE)
    jetson = Path(tegra).is_file()
    system_site = env_flag("SYSTEM_SITE")
    system_site = jetson if system_site is None else system_site
    try:
        for step in ensure_venv(args.python, args.venv, system_site, with_pip=not args.print_plan):
            say(f"venv: {step}")
        plan = make_plan(args, probe(args.venv), jetson, system_site)
        if args.json:
            print(json.dumps(plan, indent=2))
        else:
            print_plan(plan, tegra)
        if not args.print_plan:
            execute(plan)
    except SetupError as exc:
        print(f"error: setup: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        cmd = exc.cmd if isinstance(exc.cmd, str) else shlex.join(exc.cmd)
        print(f"error: setup: `{cmd[:300]}` failed with status {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
