"""App robustness: no output over an input, atomic outputs (video included), damaged input named
and never reported as success, non-finite weights and frames refused, one-line output errors."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from app.cli import main as cli_main  # noqa: E402
from test_app import REPO, decode, make_video  # noqa: E402


def run(*args, quiet=True):
    return cli_main([str(a) for a in args] + (["--quiet"] if quiet else []))


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.strip().splitlines() if ln.startswith("error:")]


def png(path: Path, size=(16, 12), seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


# --------------------------------------------------------------------------- point 1: own input
def test_video_given_as_its_own_output_is_refused_and_survives(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    make_video(clip, n=24)
    before = clip.read_bytes()
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    hard = tmp_path / "hard.mp4"
    os.link(clip, hard)
    for out in (clip, tmp_path / "." / "clip.mp4", link, hard):
        assert run(clip, "-o", out, "--backend", "bicubic") == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and "refusing to overwrite" in lines[0] and str(clip) in lines[0]
    assert run(clip, "-o", tmp_path / "x.mp4", "--backend", "bicubic", "--json", clip) == 2
    assert "--json" in error_lines(capsys.readouterr().err)[0]
    assert clip.read_bytes() == before and len(decode(clip)) == 24
    assert not (tmp_path / "x.mp4").exists()


def test_image_and_folder_given_as_their_own_output_are_refused(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        png(frames / f"f{i}.png", seed=i)
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    one = frames / "f0.png"
    for args in ((one, "-o", one), (frames, "-o", frames), (frames, "-o", str(frames) + "/"),
                 (str(frames / "*.png"), "-o", frames), (frames, "-o", tmp_path / "out", "--preview", frames)):
        assert run(*args, "--backend", "bicubic") == 2, args
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and "refusing to overwrite" in lines[0], lines
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before


# --------------------------------------------------------------------------- point 2: atomic outputs
def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


@pytest.mark.slow
def test_failed_video_run_keeps_the_earlier_output_and_leaves_no_partial_file(tmp_path):
    """A real failure mid-encode: the output grows past RLIMIT_FSIZE (a full disk)."""
    src = tmp_path / "in.mp4"
    make_video(src, n=60, size=(64, 64))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier output that must survive")
    proc = subprocess.run([sys.executable, "-m", "app", str(src), "-o", str(out), "--backend", "bicubic",
                           "--codec", "mpeg4", "--quiet"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr  # the exit table: a full disk is 2, in one line
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "no space left" in lines[0] and str(out) in lines[0], proc.stderr
    assert out.read_bytes() == b"an earlier output that must survive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"], "partial file left"


def test_output_folder_that_cannot_be_created_is_one_line(tmp_path, capsys):
    src = tmp_path / "in.mp4"
    make_video(src, n=4)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    for out in (blocker / "sub" / "out.mp4", blocker / "frames", blocker / "x.png"):
        args = (src, "-o", out) if out.suffix != ".png" else (tmp_path / "one.png", "-o", out)
        if out.suffix == ".png":
            png(tmp_path / "one.png")
        assert run(*args, "--backend", "bicubic") == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and str(blocker) in lines[0], lines
    assert blocker.read_text() == "a file, not a folder"


# --------------------------------------------------------------------------- point 5: app inputs
def test_corrupt_images_are_named_even_with_quiet_and_the_exit_is_not_zero(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    png(folder / "a.png")
    png(folder / "b.png", seed=1)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # truncated
    (folder / "d.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    assert run(folder, "-o", out, "--backend", "bicubic", "--json", tmp_path / "s.json") == 3
    err = capsys.readouterr().err
    assert str(folder / "c.png") in err and str(folder / "d.jpg") in err
    assert len(error_lines(err)) == 1
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["corrupt"] == 2 and s["frames_out"] == 2 and len(s["problems"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]


def test_inputs_sharing_a_stem_do_not_overwrite_each_other(tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    png(folder / "a.png", size=(16, 12))
    Image.fromarray(np.full((10, 14, 3), 200, np.uint8)).save(folder / "a.jpg", quality=95)
    png(folder / "a.bmp", size=(8, 8))
    png(folder / "b.png", size=(8, 6))
    out = tmp_path / "out"
    assert run(folder, "-o", out, "--backend", "bicubic") == 0
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"a_png_x2.png": (32, 24), "a_jpg_x2.png": (28, 20), "a_bmp_x2.png": (16, 16), "b_x2.png": (16, 12)}


@pytest.mark.parametrize("suffix, options", [(".mp4", {"movflags": "faststart"}), (".mkv", {})])
def test_truncated_video_is_not_reported_as_success(tmp_path, capsys, suffix, options):
    src = tmp_path / f"full{suffix}"
    with av.open(str(src), "w", options=options) as out:  # index / duration at the front: still opens cut
        vs = out.add_stream("mpeg4", rate=12)
        vs.width = vs.height = 32
        vs.pix_fmt = "yuv420p"
        for i in range(48):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (i * 5) % 256, np.uint8), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    cut = tmp_path / f"cut{suffix}"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    js = tmp_path / "s.json"
    assert run(src, "-o", tmp_path / "full_x2.mp4", "--backend", "bicubic") == 0  # no false alarm
    capsys.readouterr()
    rc = run(cut, "-o", tmp_path / "cut_x2.mp4", "--backend", "bicubic", "--json", js)
    err = capsys.readouterr().err
    assert rc == 3, err
    s = json.loads(js.read_text())
    assert s["truncated"] and 0 < s["frames_out"] < 48
    assert "truncated" in err and str(cut) in err
    assert len(decode(tmp_path / "cut_x2.mp4")) == s["frames_out"]  # what was there is still written


def test_non_finite_weights_are_refused_by_the_app(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file
    from lcoan import build_model
    model = build_model("tiny")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["groups.1.conv.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "nan.safetensors"
    save_file(state, str(weights), metadata={"format": "lcoan", "config": json.dumps(model.config.to_dict())})
    png(tmp_path / "a.png")
    for backend in ("torch", "onnxruntime"):
        assert run(tmp_path / "a.png", "-o", tmp_path / "b.png", "--model", weights, "--backend", backend) == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and str(weights) in lines[0] and "groups.1.conv.weight" in lines[0], lines
    assert not (tmp_path / "b.png").exists()
    del torch


def test_non_finite_output_frames_are_errors_not_pictures(tmp_path, capsys):
    """Finite but huge weights overflow float32 in the model: the frames are not written."""
    import torch
    from lcoan import build_model
    from lcoan.checkpoint import save_safetensors
    model = build_model("tiny")
    with torch.no_grad():
        model.head.weight.mul_(1e30)
        model.body_conv.weight.mul_(1e30)
    weights = tmp_path / "huge.safetensors"
    save_safetensors(model, weights)
    folder = tmp_path / "imgs"
    folder.mkdir()
    png(folder / "a.png")
    out = tmp_path / "out"
    assert run(folder, "-o", out, "--model", weights, "--json", tmp_path / "s.json") == 3
    err = capsys.readouterr().err
    assert "non-finite" in err and "a.png" in err
    assert json.loads((tmp_path / "s.json").read_text())["nonfinite"] == 1
    assert not list(out.glob("*.png"))


# --------------------------------------------------------------------------- the app says what happened
def test_unwritable_output_is_refused_before_the_model_loads(tmp_path, capsys):
    png(tmp_path / "a.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    # the model does not exist either: only an output check that runs first names the output
    assert run(tmp_path / "a.png", "-o", blocker / "out" / "b.png", "--backend", "torch",
               "--model", tmp_path / "missing.safetensors") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(blocker) in lines[0] and "missing.safetensors" not in lines[0], lines


def test_stale_temporaries_of_this_output_are_removed_and_nothing_else(tmp_path, capsys):
    png(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    names = [".b.png.k1ll3d.tmp.png", ".c.png.k1ll3d.tmp.png", "b.png.notes"]  # b.png's, another's, not one
    for name in names:
        (out / name).write_bytes(b"left by someone")
    assert run(tmp_path / "a.png", "-o", out / "b.png", "--backend", "bicubic") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["b.png"] + names[1:])


def test_second_writer_of_one_output_refuses_in_one_line(tmp_path, capsys):
    from lcoan.safeio import exclusive_output
    png(tmp_path / "a.png")
    out = tmp_path / "b.png"
    out.write_bytes(b"being written by another run")
    with exclusive_output(out) as lock:
        assert run(tmp_path / "a.png", "-o", out, "--backend", "bicubic") == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and str(out) in lines[0] and "another run" in lines[0], lines
        assert lock.exists()
    assert out.read_bytes() == b"being written by another run" and not lock.exists()
    assert run(tmp_path / "a.png", "-o", out, "--backend", "bicubic") == 0  # the lock went with its holder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_wrote_is_said_only_for_a_published_file_with_its_frame_count(tmp_path, capsys, monkeypatch):
    import signal
    from app import sinks
    from lcoan.safeio import OutputError

    def said(err):
        return [ln for ln in err.splitlines() if ln.startswith("wrote")]
    png(tmp_path / "a.png")
    assert run(tmp_path / "a.png", "-o", tmp_path / "b.png", "--backend", "bicubic", "--no-progress", quiet=False) == 0
    assert said(capsys.readouterr().err) == [f"wrote 1 frame(s) to {tmp_path / 'b.png'}"]

    def full_disk(path, image):
        raise OutputError(path, "no space left on device")
    monkeypatch.setattr(sinks, "_save_png", full_disk)
    assert run(tmp_path / "a.png", "-o", tmp_path / "c.png", "--backend", "bicubic", "--no-progress", quiet=False) == 2
    err = capsys.readouterr().err
    assert not said(err) and len(error_lines(err)) == 1 and "c.png: no space left" in err, err
    assert not (tmp_path / "c.png").exists()
    monkeypatch.undo()

    write = sinks.VideoSink.write

    def ctrl_c_at_frame_8(self, frame):
        write(self, frame)
        if self.frames == 8:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(sinks.VideoSink, "write", ctrl_c_at_frame_8)
    out = tmp_path / "cut.mp4"
    assert run("synthetic:400", "-o", out, "--backend", "bicubic", "--codec", "mpeg4", "--no-progress", quiet=False) == 130
    n = len(decode(out))
    assert 8 <= n < 400 and said(capsys.readouterr().err) == [f"wrote {n} of 400 frame(s) to {out}: interrupted"]
