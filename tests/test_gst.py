"""The app on GStreamer: real pipelines (videotestsrc, filesrc + decodebin, x264enc, mp4mux, udpsink,
an RTSP server on loopback), run through ``python -m app``. Skipped, with the reason, where
GStreamer or PyGObject is missing; ``LCOAN_REQUIRE_GST=1`` turns that skip into a failure (CI:
``conftest.skip_unless_required``)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app import gst
from app.cli import main as cli_main
from conftest import interrupt_when_ready, skip_unless_required  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "samples" / "sample_clip.mp4"

pytestmark = pytest.mark.gst

_ok, _why = gst.available()
if not _ok:
    skip_unless_required("gst", f"GStreamer unusable here: {_why} (make setup installs it as root with apt-get)",
                         module=True)

NEEDED = ["videotestsrc", "videoconvert", "appsink", "appsrc", "x264enc", "mp4mux", "identity",
          "decodebin", "qtdemux", "avdec_h264"]
_missing = [e for e in NEEDED if not gst.have(e)]
if _missing:
    skip_unless_required("gst", "GStreamer elements missing: " + "; ".join(gst.missing_line(e) for e in _missing),
                         module=True)

LIVE = "videotestsrc is-live=true {n}! video/x-raw,width=64,height=48,framerate=30/1 ! appsink"


def run_app(*args, tmp_path: Path) -> tuple[int, dict | None]:
    js = tmp_path / "summary.json"
    rc = cli_main([str(a) for a in args] + ["--backend", "bicubic", "--quiet", "--json", str(js)])
    return rc, json.loads(js.read_text()) if js.exists() else None


def decode(path: Path) -> tuple[list[np.ndarray], dict]:
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return frames, {"width": s.width, "height": s.height, "rate": s.average_rate}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# --------------------------------------------------------------------------- end to end
def test_videotestsrc_through_app_into_x264_mp4(tmp_path):
    out = tmp_path / "out.mp4"
    rc, s = run_app("gst:videotestsrc num-buffers=48 ! video/x-raw,width=320,height=180 ! appsink",
                    "-o", f"gst:appsrc ! x264enc ! mp4mux ! filesink location={out}", tmp_path=tmp_path)
    assert rc == 0 and s["error"] is None
    assert s["frames_in"] == s["frames_out"] == 48 and s["dropped"] == 0
    frames, info = decode(out)
    assert len(frames) == 48
    assert (info["width"], info["height"]) == (640, 360)
    assert info["rate"] == 30  # videotestsrc's default 30/1, carried through appsrc caps
    # videotestsrc's first pattern is colour bars: the left bar is light grey, the 4th green
    top = frames[0][10]
    assert top[20].min() > 150 and top[20].max() - top[20].min() < 30
    assert top[300][1] > 150 and top[300][0] < 60 and top[300][2] < 60


def test_gst_source_gives_the_frames_pyav_decodes(tmp_path):
    """filesrc + decodebin (avdec_h264) against PyAV on the bundled clip: the decoded YUV planes are
    identical; after RGB conversion (GStreamer's videoconvert vs FFmpeg's swscale) they differ by
    rounding only."""
    import av
    src = gst.open_gst_source(f"gst:filesrc location={CLIP} ! decodebin ! appsink")
    try:
        assert not src.live and src.fps == 12 and src.size == (128, 96)
        ours = [(f.image.copy(), float(f.pts * f.time_base)) for f in src]
    finally:
        src.close()
    with av.open(str(CLIP)) as c:
        ref = [(f.to_ndarray(format="rgb24"), float(f.pts * f.time_base)) for f in c.decode(video=0)]
    assert len(ours) == len(ref) == 24
    for (a, ta), (b, tb) in zip(ours, ref):
        assert a.shape == b.shape == (96, 128, 3)
        assert abs(ta - tb) < 1e-4
        assert psnr(a, b) > 40 and np.abs(a.astype(int) - b.astype(int)).max() <= 8

    # the decode itself is bit-exact: compare I420 planes
    Gst = gst._gst()
    pipe = Gst.parse_launch(f"filesrc location={CLIP} ! decodebin ! video/x-raw,format=I420 ! appsink name=s sync=false")
    sink = pipe.get_by_name("s")
    pipe.set_state(Gst.State.PLAYING)
    planes = []
    try:
        while (sample := sink.emit("pull-sample")) is not None:
            buf = sample.get_buffer()
            planes.append(np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8))
    finally:
        pipe.set_state(Gst.State.NULL)
    with av.open(str(CLIP)) as c:
        ref_planes = [f.to_ndarray(format="yuv420p").ravel() for f in c.decode(video=0)]
    assert len(planes) == 24 and all(np.array_equal(a, b) for a, b in zip(planes, ref_planes))


def test_pipeline_error_mid_stream_keeps_frames_read_and_exits_1(tmp_path, capsys):
    out = tmp_path / "err.mp4"
    # identity errors on its 20th buffer: 19 frames reach the app
    rc, s = run_app("gst:videotestsrc num-buffers=100 ! identity error-after=20 ! video/x-raw,width=64,height=48 ! appsink",
                    "-o", f"gst:{out}", tmp_path=tmp_path)
    err = capsys.readouterr().err
    assert rc == 1
    assert "identity0" in s["error"] and "Traceback" not in err
    assert s["frames_in"] == s["frames_out"] == 19
    frames, info = decode(out)  # the file was finalised (EOS through mp4mux), not left half-written
    assert len(frames) == 19 and (info["width"], info["height"]) == (128, 96)
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.slow
def test_sigint_ends_a_live_source_cleanly(tmp_path):
    out, js = tmp_path / "live.mp4", tmp_path / "s.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "app", "gst:" + LIVE.format(n=""), "-o", f"gst:{out}",
                             "--backend", "bicubic", "--quiet", "--json", str(js)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = tmp_path / ".live.mp4.part"
    err = interrupt_when_ready(proc, lambda: part.exists() and part.stat().st_size > 0, settle_s=2.0)
    assert proc.returncode == 130, err.decode()
    s = json.loads(js.read_text())
    assert s["interrupted"] and s["error"] is None and s["frames_out"] > 10
    frames, info = decode(out)
    # time stamps are capture times: a frame the live source dropped leaves a gap
    assert len(frames) == s["frames_out"] and abs(float(info["rate"]) - 30) < 1.5
    assert not part.exists()


@pytest.mark.parametrize("spec", ["csi:0", "gst:nvarguscamerasrc ! appsink"])
def test_missing_element_is_one_line_naming_it_and_its_package(spec, tmp_path, capsys):
    assert not gst.have("nvarguscamerasrc"), "this test needs a machine without the Jetson camera element"
    rc, _ = run_app(spec, "-o", tmp_path / "x.mp4", tmp_path=tmp_path)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and "Traceback" not in err
    assert len(errors) == 1
    assert "nvarguscamerasrc" in errors[0] and "nvidia-l4t-gstreamer" in errors[0]


def test_missing_sink_element_and_missing_camera_device(tmp_path, capsys):
    rc, _ = run_app("gst:videotestsrc num-buffers=2 ! appsink", "-o", "gst:appsrc ! nvv4l2h264enc ! fakesink",
                    tmp_path=tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "error: gst:appsrc ! nvv4l2h264enc ! fakesink: GStreamer element 'nvv4l2h264enc' not found" in err
    if gst.have("v4l2src"):
        free = next(n for n in range(50, 100) if not os.path.exists(f"/dev/video{n}"))
        rc, _ = run_app(f"camera:{free}", "-o", "null", tmp_path=tmp_path)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2 and len(lines) == 1 and f"/dev/video{free}" in lines[0] and "Traceback" not in err


# --------------------------------------------------------------------------- live latency
def test_realtime_live_source_drops_are_counted_and_latency_reported(tmp_path, capsys):
    out = tmp_path / "live.mp4"
    rc, s = run_app("gst:" + LIVE.format(n="num-buffers=90 "), "-o", f"gst:{out}", "--realtime",
                    "--queue-size", "2", "--simulate-latency-ms", "60", tmp_path=tmp_path)
    assert rc == 0 and s["error"] is None
    # every frame the camera made is accounted for: read by the app or dropped by the source
    assert s["frames_in"] + s["dropped_source"] == 90
    assert s["frames_out"] + s["dropped_realtime"] == s["frames_in"]
    assert s["dropped"] == s["dropped_source"] + s["dropped_realtime"] > 0
    assert s["frames_out"] < 60  # a 60 ms backend cannot keep 30 fps
    lat = s["latency_ms"]["capture"]
    assert lat["count"] == s["frames_out"]
    assert 0 < lat["p50"] <= lat["p99"] < 5000
    assert lat["p50"] >= 60  # at least the backend's own time
    frames, _ = decode(out)
    assert len(frames) == s["frames_out"]


def test_live_source_never_holds_more_than_queue_size_frames():
    src = gst.open_gst_source("gst:" + LIVE.format(n="num-buffers=45 "), queue_size=2)
    assert src.live
    period = 0.15  # a consumer 4.5x slower than the camera
    ages, seen = [], []
    try:
        for frame in src:
            assert src._queue.qsize() <= 2
            ages.append(time.perf_counter() - frame.stamps["capture"])
            seen.append(frame.pts)
            time.sleep(period)
    finally:
        src.close()
    assert src.dropped > 0 and len(seen) + src.dropped == 45
    # a frame waits behind at most 2 queued frames: about 2 consumer periods, never seconds
    assert max(ages[3:]) < 3 * period + 0.25, ages
    assert np.all(np.diff(seen) > 0)


# --------------------------------------------------------------------------- element choice
def test_element_choice_comes_from_the_registry(capsys):
    def only(*names):
        return lambda e: e in names

    text, notes, path = gst.sink_pipeline("gst:out.mp4", find=only("nvv4l2h264enc", "nvvidconv", "mp4mux"))
    assert "nvv4l2h264enc" in text and "x264enc" not in text and path == "out.mp4"
    text, notes, _ = gst.sink_pipeline("gst:out.mkv", find=only("x264enc", "matroskamux"))
    assert "x264enc" in text and "matroskamux" in text and "nvv4l2h264enc not in the registry" in notes[0]
    text, notes = gst.source_pipeline("rtsp://127.0.0.1:8554/cam",
                                      find=only("rtspsrc", "rtph264depay", "h264parse", "nvv4l2decoder", "nvvidconv"))
    assert "nvv4l2decoder ! nvvidconv" in text
    # and the real registry of this machine
    assert gst.have("nvv4l2h264enc") is False and gst.wants_sink("out.mp4") is False  # PyAV keeps plain files
    text, notes = gst.source_pipeline("rtsp://127.0.0.1:8554/cam")
    assert "avdec_h264" in text and "nvv4l2decoder not in the registry" in notes[0]
    with pytest.raises(gst.SourceError, match="nvarguscamerasrc' not found"):
        gst.source_pipeline("csi:1:1280x720@60")


# --------------------------------------------------------------------------- network (loopback)
def _free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_udp_stream_out_is_received_on_loopback(tmp_path):
    if not gst.have("rtph264pay") or not gst.have("udpsrc"):
        pytest.skip(gst.missing_line("rtph264pay"))
    Gst = gst._gst()
    port = _free_port()
    rx = Gst.parse_launch(
        f'udpsrc address=127.0.0.1 port={port} buffer-size=4194304 caps="application/x-rtp,media=video,'
        'encoding-name=H264,clock-rate=90000,payload=96" ! rtph264depay ! avdec_h264 ! videoconvert '
        '! video/x-raw,format=RGB ! appsink name=s sync=false')
    sink = rx.get_by_name("s")
    got = []
    rx.set_state(Gst.State.PLAYING)

    def pull():
        while (sample := sink.emit("try-pull-sample", 2 * Gst.SECOND)) is not None:
            st = sample.get_caps().get_structure(0)
            got.append((st.get_value("width"), st.get_value("height")))
    reader = threading.Thread(target=pull, daemon=True)
    reader.start()
    try:
        rc, s = run_app("gst:videotestsrc num-buffers=30 ! video/x-raw,width=64,height=48,framerate=30/1 ! appsink",
                        "-o", f"udp://127.0.0.1:{port}", tmp_path=tmp_path)
        reader.join(15)
    finally:
        rx.set_state(Gst.State.NULL)
    assert rc == 0 and s["frames_out"] == 30
    assert len(got) >= 27 and set(got) == {(128, 96)}  # UDP: a lost packet may cost a frame


@pytest.mark.slow
def test_rtsp_source_from_a_loopback_server(tmp_path):
    try:
        import gi
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, GstRtspServer
    except (ImportError, ValueError) as exc:
        pytest.skip(f"no GstRtspServer introspection data (gir1.2-gst-rtsp-server-1.0): {exc}")
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( videotestsrc is-live=true num-buffers=45 ! video/x-raw,width=64,height=48,framerate=30/1 "
                       "! x264enc tune=zerolatency key-int-max=15 ! rtph264pay name=pay0 pt=96 )")
    server.get_mount_points().add_factory("/cam", factory)
    ctx = GLib.MainContext.new()
    server_id = server.attach(ctx)
    port = server.get_bound_port()
    loop = GLib.MainLoop.new(ctx, False)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    out = tmp_path / "rtsp.mp4"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run([sys.executable, "-m", "app", f"rtsp://127.0.0.1:{port}/cam", "-o", f"gst:{out}",
                               "--backend", "bicubic", "--quiet", "--json", str(tmp_path / "s.json")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    finally:
        loop.quit()
        thread.join(5)
        source = ctx.find_source_by_id(server_id)
        if source is not None:
            source.destroy()
    assert "decoder avdec_h264" in proc.stderr
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    frames, info = decode(out)
    assert s["frames_out"] >= 30 and len(frames) == s["frames_out"]
    assert (info["width"], info["height"]) == (128, 96)
