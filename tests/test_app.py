"""The upscaling app: video in/out through PyAV, frame accounting, real-time drops, backend
equivalence (ONNX Runtime vs PyTorch), corrupt input, resolution changes, Ctrl-C, flat memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

av = pytest.importorskip("av")

from app.backends import (BackendUnavailable, BicubicBackend, OrtBackend, SlowedBackend,  # noqa: E402
                          TorchBackend, load_backend)
from app.cli import main as cli_main  # noqa: E402
from app.stream import LatencyHistogram, Pipeline, PipelineConfig  # noqa: E402
from app.sinks import VideoSink, open_sink  # noqa: E402
from app.sources import Frame, ImageSource, SyntheticSource, open_source  # noqa: E402
from conftest import interrupt_when_ready  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CODEC = "mpeg4"  # in every FFmpeg build; libx264 is used for output when present


def make_video(path: Path, n: int = 12, size: tuple[int, int] = (32, 32), rate: int = 12,
               corrupt_index: int | None = None, audio: bool = False, seed: int = 0) -> None:
    """An intra-only mpeg4 clip, so that a damaged packet (``corrupt_index``) damages one frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream(CODEC, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = 1
        vs.codec_context.bit_rate = 2_000_000
        count = 0

        def mux(packets):
            nonlocal count
            for p in packets:
                if count == corrupt_index:
                    bad = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                    bad.pts, bad.dts, bad.time_base, bad.stream = p.pts, p.dts, p.time_base, p.stream
                    bad.is_keyframe = True
                    p = bad
                count += 1
                out.mux(p)

        # smooth content so that mpeg4 reproduces it well
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            img = np.stack([(xx * 7 + i * 9) % 256, (yy * 5 + i * 3) % 256, ((xx + yy) * 4) % 256], -1)
            f = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            f.pts = i
            mux(vs.encode(f))
        mux(vs.encode(None))
    if audio:  # remux into a file with an audio track (all streams must exist before muxing starts)
        _add_audio(path, n, rate)


def _add_audio(path: Path, n: int, rate: int) -> None:
    tmp = path.with_name(path.stem + "_a" + path.suffix)
    with av.open(str(path)) as src, av.open(str(tmp), "w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=8000)
        aout.layout = "mono"
        for p in src.demux(vin):
            if p.dts is None:
                continue
            p.stream = vout
            out.mux(p)
        samples = n * 8000 // rate
        for k in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 8000, k
            for p in aout.encode(af):
                out.mux(p)
        for p in aout.encode(None):
            out.mux(p)
    os.replace(tmp, path)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def video_info(path: Path) -> dict:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return {"width": vs.width, "height": vs.height, "rate": vs.average_rate, "time_base": vs.time_base,
                "audio": len(c.streams.audio), "frames": sum(1 for _ in c.decode(video=0))}


def run_cli(*args) -> tuple[int, dict | None]:
    argv = [str(a) for a in args]
    rc = cli_main(argv + ["--quiet"])
    summary = None
    if "--json" in argv:
        p = Path(argv[argv.index("--json") + 1])
        summary = json.loads(p.read_text()) if p.exists() else None
    return rc, summary


# --------------------------------------------------------------------------- video end to end
def test_video_frames_in_equal_out_size_fps_audio_preview(tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, n=12, size=(32, 24), rate=12, audio=True)
    out, js, prev = tmp_path / "out.mp4", tmp_path / "s.json", tmp_path / "prev"
    rc, s = run_cli(src, "-o", out, "--model", "random:tiny", "--json", js, "--batch", "2",
                    "--preview", prev, "--preview-every", "5")
    assert rc == 0
    assert s["frames_in"] == s["frames_out"] == 12 and s["dropped"] == 0 and s["corrupt"] == 0
    info, src_info = video_info(out), video_info(src)
    assert info["frames"] == 12
    assert (info["width"], info["height"]) == (64, 48)
    assert info["rate"] == src_info["rate"] == 12
    assert info["audio"] == 1 and src_info["audio"] == 1
    for key in ("decode", "pre", "infer", "post", "encode", "e2e"):
        lat = s["latency_ms"][key]
        assert lat["count"] == 12 and lat["p50"] <= lat["p99"] <= lat["max"] + 1e-9
    assert s["backend"] == "torch" and s["precision"] == "fp32" and s["device"] == "cpu"
    assert s["rss_mb"]["start"] > 0 and s["rss_mb"]["end"] > 0
    previews = sorted(p.name for p in prev.iterdir())
    assert previews == ["preview_000000.png", "preview_000005.png", "preview_000010.png"]
    from PIL import Image
    # caption strip (14 rows) over [bicubic | gap | model]
    assert Image.open(prev / previews[0]).size == (2 * 24 * 2 + 4, 14 + 24 * 2)


def test_offline_never_drops_even_with_a_slow_backend(tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, n=10, rate=100)
    backend = SlowedBackend(BicubicBackend(2), 0.05)
    pipe = Pipeline(open_source(str(src)), backend, open_sink("null", None), PipelineConfig(queue_size=1))
    s = pipe.run()
    assert s["frames_in"] == s["frames_out"] == 10 and s["dropped"] == 0


def test_realtime_drops_frames_against_a_slow_backend_and_counts_them(tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, n=30, rate=60)            # 0.5 s of source time
    out = tmp_path / "rt.mp4"
    source = open_source(str(src))
    backend = SlowedBackend(BicubicBackend(2), 0.1)   # 10 fps < 60 fps
    s = Pipeline(source, backend, open_sink(str(out), source), PipelineConfig(realtime=True, queue_size=1)).run()
    assert s["frames_in"] == 30
    assert s["dropped"] >= 10, s
    assert s["frames_out"] + s["dropped"] == s["frames_in"]
    assert video_info(out)["frames"] == s["frames_out"]
    # the wall time follows the source clock, not 30 x 0.1 s
    assert s["wall_s"] < 3.0


# --------------------------------------------------------------------------- backends
def test_onnxruntime_matches_torch_on_cpu(tiny, tmp_path):
    from verify.parity import drift_psnr
    from export.to_onnx import export_onnx
    path = export_onnx(tiny, tmp_path / "tiny.onnx", sort="onnx")
    plugin = export_onnx(tiny, tmp_path / "tiny_plugin.onnx", sort="plugin")
    torch_be = TorchBackend(tiny, device="cpu")
    x = np.random.default_rng(1).random((2, 3, 20, 24), dtype=np.float32)
    ref = torch_be.infer(x)
    for p in (path, plugin):
        ort_be = load_backend(None, str(p))
        assert isinstance(ort_be, OrtBackend) and ort_be.scale == 2 and ort_be.device == "cpu"
        out = ort_be.infer(x)
        assert out.shape == ref.shape == (2, 3, 40, 48)
        assert drift_psnr(out, ref) >= 60 or float(np.abs(out - ref).max()) <= 1e-4

    # whole pipeline: the same video through both backends gives the same frames
    src = tmp_path / "in.mp4"
    make_video(src, n=4, size=(24, 16))
    outs = {}
    for name, model in (("torch", None), ("onnxruntime", path)):
        folder = tmp_path / name
        be = torch_be if model is None else load_backend("onnxruntime", str(model))
        s = Pipeline(open_source(str(src)), be, open_sink(str(folder), None), PipelineConfig(batch=2)).run()
        assert s["frames_out"] == 4
        outs[name] = [np.asarray(__import__("PIL.Image").Image.open(p)) for p in sorted(folder.iterdir())]
    for a, b in zip(outs["torch"], outs["onnxruntime"]):
        assert a.shape == b.shape == (32, 48, 3)
        assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
        assert drift_psnr(a / 255.0, b / 255.0) >= 60


def test_missing_backend_is_one_clear_line(tmp_path, capsys):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    rc = cli_main([str(tmp_path), "--model", str(engine), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    if "TensorRT" in err or "tensorrt" in err:
        assert "pip install" in err or "cannot load" in err
    with pytest.raises(BackendUnavailable):
        load_backend("torch", str(tmp_path / "missing.safetensors"))


# --------------------------------------------------------------------------- robustness
def test_corrupt_packet_in_video_is_skipped_and_counted(tmp_path):
    src = tmp_path / "bad.mp4"
    make_video(src, n=12, corrupt_index=5)
    out, js = tmp_path / "out.mp4", tmp_path / "s.json"
    rc, s = run_cli(src, "-o", out, "--backend", "bicubic", "--json", js)
    assert rc == 3  # written, but damaged input never looks like success
    assert s["corrupt"] == 1 and len(s["problems"]) == 1 and str(src) in s["problems"][0]
    assert s["frames_in"] == s["frames_out"] == 11
    assert video_info(out)["frames"] == 11


def test_image_folder_with_corrupt_file_and_mixed_sizes(tiny, tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a_001.png": (16, 16), "a_002.png": (16, 16), "a_003.png": (20, 12), "a_005.png": (16, 16)}
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "a_004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # truncated PNG
    out = tmp_path / "out"
    s = Pipeline(open_source(str(folder)), TorchBackend(tiny, device="cpu"), open_sink(str(out), None),
                 PipelineConfig(batch=3)).run()
    assert s["corrupt"] == 1 and s["frames_in"] == s["frames_out"] == 4
    for name, (w, h) in sizes.items():
        assert Image.open(out / name).size == (2 * w, 2 * h)
    # the same files as a printf sequence and as a glob
    assert open_source(str(folder / "a_%03d.png")).total == 5
    assert open_source(str(folder / "a_00[12].png")).total == 2


def test_video_resolution_change_is_scaled_to_the_first_size(tmp_path):
    path = tmp_path / "mixed.mp4"
    sink = VideoSink(str(path), Fraction(10), Fraction(1, 10))
    for i, (h, w) in enumerate([(32, 32), (32, 32), (24, 40), (32, 32)]):
        sink.write(Frame(index=i, image=np.full((h, w, 3), 100, np.uint8), pts=i, time_base=Fraction(1, 10)))
    sink.close()
    assert sink.rescaled == 1
    info = video_info(path)
    assert (info["width"], info["height"], info["frames"]) == (32, 32, 4)


@pytest.mark.slow
def test_sigint_leaves_a_playable_file(tmp_path):
    src = tmp_path / "long.mp4"
    make_video(src, n=300, size=(32, 32), rate=25)
    out, js = tmp_path / "out.mp4", tmp_path / "s.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "app", str(src), "-o", str(out), "--backend", "bicubic",
                             "--simulate-latency-ms", "40", "--quiet", "--json", str(js)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the video is encoded under a temporary name beside out.mp4 until it is complete; 3 s more
    # let some frames through even on a loaded machine
    err = interrupt_when_ready(proc, lambda: list(tmp_path.glob(".out.mp4.*")), settle_s=3.0)
    assert proc.returncode == 130, err.decode()
    s = json.loads(js.read_text())
    assert s["interrupted"] and 0 < s["frames_out"] < 300
    frames = decode(out)  # raises if the file was not finalised (mp4 index written at close)
    assert len(frames) == s["frames_out"]
    assert not list(tmp_path.glob(".out.mp4.*")), "temporary file left behind"
    assert frames[0].shape == (64, 64, 3)


def test_memory_stays_flat_over_hundreds_of_frames():
    from app.stream import rss_mb
    backend = BicubicBackend(2)
    Pipeline(SyntheticSource(100), backend, open_sink("null", None)).run()  # warm up allocators
    start = rss_mb()
    s = Pipeline(SyntheticSource(300), backend, open_sink("null", None), PipelineConfig(batch=2)).run()
    assert s["frames_out"] == 300
    assert rss_mb() - start < 16, (start, rss_mb())
    assert max(s["queue_depth_max"].values()) <= 4


def test_latency_histogram_quantiles():
    h = LatencyHistogram()
    values = np.random.default_rng(0).uniform(0.001, 0.1, 5000)
    for v in values:
        h.add(float(v))
    assert h.count == 5000 and abs(h.mean - values.mean()) < 1e-9
    for q in (0.5, 0.99):
        assert abs(h.quantile(q) / np.quantile(values, q) - 1) < 0.03
    assert h.counts.nbytes < 16_000  # fixed size


def test_image_sink_names_follow_source_and_null_output(tmp_path):
    frames = [Frame(index=0, image=np.zeros((4, 4, 3), np.uint8), name="x.jpg")]
    sink = open_sink(str(tmp_path / "o"), None)
    sink.write(frames[0])
    assert (tmp_path / "o" / "x.png").exists()
    with pytest.raises(Exception):
        ImageSource([], "empty")


def test_missing_onnxruntime_names_what_to_install(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        load_backend("onnxruntime", "random:tiny")


def test_tiles_and_engine_profile_limits_give_the_same_frames(tmp_path):
    from app.backends import Backend

    class FloatBicubic(BicubicBackend):  # the float path (torch bicubic), the one tiles take
        run_u8 = Backend.run_u8

    class Limited(FloatBicubic):  # an "engine" whose profile takes at most 2 x 3 x 16 x 16
        max_batch, max_hw = 2, (16, 16)
        calls: list = []

        def infer(self, batch):
            assert batch.shape[0] <= 2 and batch.shape[2] <= 16 and batch.shape[3] <= 16
            self.calls.append(batch.shape)
            return super().infer(batch)

    outs = {}
    for label, backend, tile in (("whole", FloatBicubic(2), None), ("tiled", FloatBicubic(2), 8),
                                 ("profile", Limited(2), None)):
        folder = tmp_path / label
        s = Pipeline(SyntheticSource(5, 40, 28), backend, open_sink(str(folder), None),
                     PipelineConfig(batch=3, tile=tile, overlap=4)).run()
        assert s["frames_out"] == 5
        outs[label] = [np.asarray(__import__("PIL.Image").Image.open(p)) for p in sorted(folder.iterdir())]
    assert Limited.calls
    for a, b, c in zip(outs["whole"], outs["tiled"], outs["profile"]):
        assert a.shape == (56, 80, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert np.abs(a.astype(int) - c.astype(int)).max() <= 1


def test_torch_backend_runs_nhwc_without_touching_the_callers_model(tiny) -> None:
    import torch

    batch = np.random.default_rng(0).random((2, 3, 24, 40), dtype=np.float32)
    with torch.inference_mode():
        expected = tiny(torch.from_numpy(batch)).numpy()
    backend = TorchBackend(tiny, device="cpu")
    got = backend.infer(batch)
    assert got.shape == expected.shape and got.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(got, expected, atol=1e-5)  # NHWC changes float rounding only
    assert next(backend.model.parameters()).is_contiguous(memory_format=torch.channels_last)
    weight = next(tiny.parameters())  # the caller's module keeps its own layout and dtype
    assert weight.is_contiguous() and weight.dtype == torch.float32


def test_default_weights_are_realtime_for_video_and_edge_for_images(tmp_path) -> None:
    from app.cli import _is_stream

    summary = tmp_path / "video.json"
    assert cli_main(["--synthetic", "2", "-o", "null", "--json", str(summary), "--quiet"]) == 0
    assert json.loads(summary.read_text())["model"] == "realtime_x2"
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(folder / "a.png")
    summary = tmp_path / "images.json"
    assert cli_main([str(folder), "-o", str(tmp_path / "out"), "--json", str(summary), "--quiet"]) == 0
    assert json.loads(summary.read_text())["model"] == "bundled weights"  # edge_x2, the table's DEFAULTS
    assert all(_is_stream(s) for s in ("clip.MP4", "camera:0", "rtsp://h/x", "gst:videotestsrc ! appsink"))
    assert not any(_is_stream(s) for s in ("a.png", "frames/", "shots/*.jpg"))
