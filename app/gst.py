"""GStreamer sources and sinks for the app, beside the PyAV ones in :mod:`app.sources` and :mod:`app.sinks`.

On a Jetson the cameras and the hardware codecs exist only as GStreamer elements
(``nvarguscamerasrc``, ``nvv4l2decoder``, ``nvv4l2h264enc``), so the app can read from and write
to GStreamer pipelines. Elements are chosen by looking them up in the GStreamer registry
(``Gst.ElementFactory.find``), never by guessing the platform, and the choice is printed at
start-up.

Sources (INPUT)
    ``gst:... ! appsink``     any pipeline ending in ``appsink``; frames are converted to RGB
    ``camera:N[:WxH[@FPS]]``  ``v4l2src device=/dev/videoN`` (used when ``v4l2src`` is found,
                              otherwise :mod:`app.sources` falls back to FFmpeg's v4l2 input)
    ``csi:N[:WxH[@FPS]]``     ``nvarguscamerasrc sensor-id=N`` (Jetson CSI cameras)
    ``rtsp://...``            ``rtspsrc`` + H.264 depayloader; decoder ``nvv4l2decoder`` where
                              found, else ``avdec_h264``, else ``openh264dec``

Sinks (-o OUTPUT)
    ``gst:appsrc ! ...``      any pipeline starting with ``appsrc`` (a ``videoconvert`` is
                              inserted after it, so encoders get a format they take)
    ``gst:out.mp4|.mkv|.mov|.ts``  a file encoded by ``nvv4l2h264enc`` where found, else
                              ``x264enc``; written under a temporary name and renamed when
                              complete. A plain ``out.mp4`` goes here too when
                              ``nvv4l2h264enc`` is found (hardware encode on Jetson).
    ``udp://HOST:PORT``       H.264 in RTP over UDP (``rtph264pay ! udpsink``)
    ``rtsp://HOST:PORT/PATH`` H.264 published to an RTSP server (``rtspclientsink``, RECORD)

Live sources (``is-live`` pipelines: cameras, RTSP, ``videotestsrc is-live=true``) never hold more
than ``queue_size`` frames: when the app falls behind, the oldest frame is dropped and counted
(``dropped_source`` in the summary). Non-live sources (files) block instead, so nothing is
dropped. Live frames carry their capture time (buffer running time against the pipeline clock),
from which the pipeline reports capture -> encoded latency.
"""
from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .endpoints import Frame, Sink, SinkError, Source, SourceError
from .stream import LatencyHistogram

__all__ = ["available", "wants_source", "wants_sink", "open_gst_source", "open_gst_sink",
           "GstSource", "GstSink", "PACKAGES", "source_pipeline", "sink_pipeline"]

# Which package brings an element: Debian/Ubuntu package names; on Jetson the nv* elements come
# with JetPack (nvidia-l4t-gstreamer).
PACKAGES = {
    "appsink": "gstreamer1.0-plugins-base", "appsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base", "videoscale": "gstreamer1.0-plugins-base",
    "videotestsrc": "gstreamer1.0-plugins-base", "decodebin": "gstreamer1.0-plugins-base",
    "uridecodebin": "gstreamer1.0-plugins-base", "playbin": "gstreamer1.0-plugins-base",
    "v4l2src": "gstreamer1.0-plugins-good", "rtspsrc": "gstreamer1.0-plugins-good",
    "rtph264depay": "gstreamer1.0-plugins-good", "rtph264pay": "gstreamer1.0-plugins-good",
    "udpsink": "gstreamer1.0-plugins-good", "udpsrc": "gstreamer1.0-plugins-good",
    "mp4mux": "gstreamer1.0-plugins-good", "qtmux": "gstreamer1.0-plugins-good",
    "qtdemux": "gstreamer1.0-plugins-good", "matroskamux": "gstreamer1.0-plugins-good",
    "x264enc": "gstreamer1.0-plugins-ugly", "h264parse": "gstreamer1.0-plugins-bad",
    "mpegtsmux": "gstreamer1.0-plugins-bad", "openh264dec": "gstreamer1.0-plugins-bad",
    "avdec_h264": "gstreamer1.0-libav", "rtspclientsink": "gstreamer1.0-rtsp",
    "nvarguscamerasrc": "nvidia-l4t-gstreamer (NVIDIA JetPack; Jetson only)",
    "nvvidconv": "nvidia-l4t-gstreamer (NVIDIA JetPack; Jetson only)",
    "nvv4l2decoder": "nvidia-l4t-gstreamer (NVIDIA JetPack; Jetson only)",
    "nvv4l2h264enc": "nvidia-l4t-gstreamer (NVIDIA JetPack; Jetson only)",
    "nvv4l2h265enc": "nvidia-l4t-gstreamer (NVIDIA JetPack; Jetson only)",
}

INSTALL_HINT = ("apt-get install gstreamer1.0-plugins-base gstreamer1.0-plugins-good gir1.2-gstreamer-1.0 "
                "gir1.2-gst-plugins-base-1.0 and pip install 'lcoan-edge[gst]' (PyGObject)")

_Gst = None
_import_error: Optional[str] = None


def _gst():
    """The initialised ``Gst`` module, or None (the reason is in ``_import_error``)."""
    global _Gst, _import_error
    if _Gst is not None or _import_error is not None:
        return _Gst
    try:
        import gi
        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import Gst, GstApp, GstVideo  # noqa: F401
        Gst.init(None)
        _Gst = Gst
    except ImportError as exc:
        _import_error = f"PyGObject is not installed ({exc})"
    except ValueError as exc:  # gi.require_version: typelib not installed
        _import_error = f"GStreamer introspection data missing ({exc})"
    return _Gst


def available() -> tuple[bool, str]:
    """(True, version) when GStreamer is usable from Python, else (False, reason)."""
    Gst = _gst()
    if Gst is None:
        return False, _import_error or "GStreamer unavailable"
    return True, Gst.version_string()


def have(element: str) -> bool:
    Gst = _gst()
    return Gst is not None and Gst.ElementFactory.find(element) is not None


def missing_line(element: str) -> str:
    package = PACKAGES.get(element)
    return f"GStreamer element '{element}' not found" + (f" (it comes with {package})" if package else "")


def _require(spec: str, elements: list[str], error=SourceError) -> None:
    ok, reason = available()
    if not ok:
        raise error(f"{_label(spec)}: needs GStreamer: {reason}; {INSTALL_HINT}")
    for element in elements:
        if not have(element):
            raise error(f"{_label(spec)}: {missing_line(element)}")


def _first(candidates: list[str], find: Callable[[str], bool]) -> Optional[str]:
    return next((c for c in candidates if find(c)), None)


def _label(spec: str) -> str:
    """The spec as error messages name it: long pipelines are cut so the message stays one line."""
    return spec if len(spec) <= 72 else spec[:69] + "..."


def _say(message: str) -> None:
    print(f"gstreamer: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- which spec is ours
def wants_source(spec: str) -> bool:
    """True when ``spec`` is a GStreamer input (``camera:`` only when ``v4l2src`` is found)."""
    if spec.startswith(("gst:", "csi:", "rtsp://", "rtsps://")):
        return True
    if spec.startswith("camera:"):
        return have("v4l2src")
    return False


_FILE_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".ts")


def wants_sink(spec: str, codec: Optional[str] = None) -> bool:
    """True when ``spec`` is a GStreamer output. A plain video file goes to GStreamer only when
    the hardware encoder is in the registry and no PyAV ``--codec`` was asked for."""
    if spec.startswith(("gst:", "udp://", "rtsp://", "rtsps://")):
        return True
    if codec in (None, "auto") and Path(spec).suffix.lower() in _FILE_SUFFIXES and have("nvv4l2h264enc"):
        return True
    return False


# --------------------------------------------------------------------------- pipeline text
_MODE = re.compile(r"^(\d+)(?::(\d+)x(\d+))?(?:@(\d+(?:/\d+)?))?$")
_RGB_TAIL = "videoconvert ! video/x-raw,format=RGB"


def _camera_mode(spec: str, rest: str):
    m = _MODE.match(rest or "0")
    if not m:
        raise SourceError(f"{_label(spec)}: expected {spec.split(':')[0]}:N[:WxH[@FPS]]")
    n, w, h, fps = m.groups()
    return int(n), (int(w), int(h)) if w else None, fps


def source_pipeline(spec: str, find: Callable[[str], bool] = have) -> tuple[str, list[str]]:
    """(pipeline text ending in appsink, notes on the element choice) for a source spec."""
    if spec.startswith("gst:"):
        text = spec[4:].strip()
        head, bang, tail = text.rpartition("!")
        if not tail.strip().startswith("appsink"):
            raise SourceError(f"{_label(spec)}: a gst: input must be a pipeline ending in appsink")
        tail = tail.strip()
        # convert whatever the pipeline makes to packed RGB, the app's frame format
        return (f"{head.strip()} ! {_RGB_TAIL} ! {tail}" if bang else f"{_RGB_TAIL} ! {tail}"), []
    if spec.startswith("camera:"):
        n, size, fps = _camera_mode(spec, spec.split(":", 1)[1])
        caps = ""
        if size or fps:
            fps = fps if not fps or "/" in fps else f"{fps}/1"
            fields = ",".join(f for f in (f"width={size[0]},height={size[1]}" if size else "",
                                          f"framerate={fps}" if fps else "") if f)
            caps = f' ! capsfilter caps="video/x-raw,{fields};image/jpeg,{fields}"'
        # decodebin passes raw video on and decodes MJPEG, which most USB cameras send at 1080p
        return (f"v4l2src device=/dev/video{n}{caps} ! decodebin ! {_RGB_TAIL} ! appsink name=appsink",
                ["v4l2src found"])
    if spec.startswith("csi:"):
        n, size, fps = _camera_mode(spec, spec.split(":", 1)[1])
        w, h = size or (1920, 1080)
        fps = fps or "30"
        fps = fps if "/" in fps else f"{fps}/1"
        if not find("nvarguscamerasrc"):
            raise SourceError(f"{_label(spec)}: {missing_line('nvarguscamerasrc')}")
        if not find("nvvidconv"):
            raise SourceError(f"{_label(spec)}: {missing_line('nvvidconv')}")
        return (f"nvarguscamerasrc sensor-id={n} ! video/x-raw(memory:NVMM),width={w},height={h},"
                f"framerate={fps} ! nvvidconv ! video/x-raw,format=BGRx ! {_RGB_TAIL} ! appsink name=appsink",
                ["nvarguscamerasrc found"])
    if spec.startswith(("rtsp://", "rtsps://")):
        decoder = _first(["nvv4l2decoder", "avdec_h264", "openh264dec"], find)
        if decoder is None:
            raise SourceError(f"{_label(spec)}: no H.264 decoder: {missing_line('nvv4l2decoder')}; "
                              f"{missing_line('avdec_h264')}")
        for element in ("rtspsrc", "rtph264depay", "h264parse"):
            if not find(element):
                raise SourceError(f"{_label(spec)}: {missing_line(element)}")
        after = " ! nvvidconv ! video/x-raw,format=BGRx" if decoder == "nvv4l2decoder" else ""
        notes = [f"decoder {decoder}" + ("" if decoder == "nvv4l2decoder" else " (nvv4l2decoder not in the registry)")]
        return (f"rtspsrc location={spec} latency=100 ! rtph264depay ! h264parse ! {decoder}{after} "
                f"! {_RGB_TAIL} ! appsink name=appsink", notes)
    raise SourceError(f"{_label(spec)}: not a GStreamer input")


def sink_pipeline(spec: str, crf: Optional[int] = None, live: bool = False,
                  find: Callable[[str], bool] = have) -> tuple[str, list[str], Optional[str]]:
    """(pipeline text starting with appsrc, notes, file written by it or None) for a sink spec."""
    text = spec[4:].strip() if spec.startswith("gst:") else spec
    if text.startswith("appsrc"):
        head, bang, tail = text.partition("!")
        if not bang:
            raise SinkError(f"{_label(spec)}: a gst: output must be a pipeline 'appsrc ! ...'")
        return f"{head.strip()} ! videoconvert ! {tail.strip()}", [], None
    hw = find("nvv4l2h264enc") and find("nvvidconv")
    if hw:
        encode = ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 "
                  "! nvv4l2h264enc insert-sps-pps=true idrinterval=30 ! h264parse")
        note = "encoder nvv4l2h264enc"
    elif find("x264enc"):
        quality = crf if crf is not None else 18
        # x264's look-ahead holds about 40 frames: seconds of latency behind a live source
        tune = " tune=zerolatency" if live or not text.endswith(_FILE_SUFFIXES) else ""
        encode = f"videoconvert ! x264enc speed-preset=veryfast{tune} pass=qual quantizer={quality}"
        note = "encoder x264enc (nvv4l2h264enc not in the registry)"
    else:
        raise SinkError(f"{_label(spec)}: no H.264 encoder: {missing_line('nvv4l2h264enc')}; {missing_line('x264enc')}")
    if text.startswith("udp://"):
        m = re.fullmatch(r"udp://([^:/]+):(\d+)", text)
        if not m:
            raise SinkError(f"{_label(spec)}: expected udp://HOST:PORT")
        if not hw:  # a receiver joining late needs SPS/PPS and a key frame soon
            encode = encode.replace("pass=qual", "key-int-max=30 pass=qual")
        return (f"appsrc ! {encode} ! rtph264pay config-interval=1 pt=96 ! udpsink host={m.group(1)} "
                f"port={m.group(2)} sync=false", [note], None)
    if text.startswith(("rtsp://", "rtsps://")):
        if not find("rtspclientsink"):
            raise SinkError(f"{_label(spec)}: {missing_line('rtspclientsink')}")
        if not hw:
            encode = encode.replace("pass=qual", "key-int-max=30 pass=qual")
        return f"appsrc ! {encode} ! rtspclientsink location={text}", [note], None
    suffix = Path(text).suffix.lower()
    muxer = {".mkv": "matroskamux", ".ts": "mpegtsmux", ".mov": "qtmux"}.get(suffix, "mp4mux")
    if suffix not in _FILE_SUFFIXES:
        raise SinkError(f"{_label(spec)}: expected appsrc ! ..., a video file ({', '.join(_FILE_SUFFIXES)}), "
                        "udp://HOST:PORT or rtsp://...")
    if not find(muxer):
        raise SinkError(f"{_label(spec)}: {missing_line(muxer)}")
    return f"appsrc ! {encode} ! {muxer} ! filesink location=%(location)s", [note], text


# --------------------------------------------------------------------------- helpers
def _parse(Gst, text: str, spec: str, error):
    from gi.repository import GLib
    try:
        return Gst.parse_launch(text)
    except GLib.Error as exc:
        m = re.search(r'no element "([^"]+)"', exc.message or "")
        if m:
            raise error(f"{_label(spec)}: {missing_line(m.group(1))}") from None
        raise error(f"{_label(spec)}: bad pipeline: {exc.message}") from None


def _elements(pipeline) -> list:
    found = []
    it = pipeline.iterate_recurse()
    while True:
        res, element = it.next()
        if res.value_nick != "ok":
            break
        found.append(element)
    return found


def _find_by_factory(pipeline, factory: str) -> list:
    return [e for e in _elements(pipeline) if e.get_factory() is not None and e.get_factory().get_name() == factory]


def _bus_error(Gst, msg) -> str:
    err, debug = msg.parse_error()
    return f"{msg.src.get_name() if msg.src else 'pipeline'}: {err.message}"


def _rgb_array(Gst, sample, info_cache: dict) -> np.ndarray:
    from gi.repository import GstVideo
    caps = sample.get_caps()
    key = caps.to_string()
    info = info_cache.get(key)
    if info is None:
        info = GstVideo.VideoInfo.new_from_caps(caps)
        info_cache.clear()
        info_cache[key] = info
    buf = sample.get_buffer()
    w, h = info.width, info.height
    stride = info.stride[0]
    meta = GstVideo.buffer_get_video_meta(buf)
    if meta is not None:
        stride = meta.stride[0]
    data = buf.extract_dup(0, buf.get_size())
    rows = np.frombuffer(data, np.uint8, count=stride * h).reshape(h, stride)
    image = rows[:, :w * 3].reshape(h, w, 3)
    return image if stride == w * 3 else np.ascontiguousarray(image)


# --------------------------------------------------------------------------- source
class GstSource(Source):
    """Frames from a GStreamer pipeline ending in ``appsink``."""
    kind = "gstreamer"

    def __init__(self, spec: str, text: str, queue_size: int = 4, start_timeout: float = 20.0):
        super().__init__()
        Gst = _gst()
        self.Gst, self.spec, self.text = Gst, spec, text
        self.dropped = 0
        self._cache: dict = {}
        self._first_pts: Optional[int] = None
        self.pipeline = _parse(Gst, text, spec, SourceError)
        sinks = _find_by_factory(self.pipeline, "appsink")
        if len(sinks) != 1:
            raise SourceError(f"{_label(spec)}: the pipeline needs exactly one appsink (found {len(sinks)})")
        self.appsink = sinks[0]
        # The appsink hands every sample to our own bounded queue at once: that queue is the
        # only place frames wait, and it counts what a live source has to drop.
        self.appsink.set_property("sync", False)
        self.appsink.set_property("max-buffers", 1)
        self.appsink.set_property("emit-signals", True)
        self.appsink.connect("new-sample", self._on_sample)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self.bus = self.pipeline.get_bus()
        self._ended = False
        self._error: Optional[str] = None
        ret = self.pipeline.set_state(Gst.State.PAUSED)
        self.live = ret == Gst.StateChangeReturn.NO_PREROLL
        if ret == Gst.StateChangeReturn.FAILURE or self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise self._start_failure("cannot start")
        # Wait for the first frame: its caps give the size and frame rate the sink needs.
        deadline = time.monotonic() + start_timeout
        while self._queue.empty():
            try:
                self._poll_bus(0.05)
            except KeyboardInterrupt:  # Ctrl-C before the app's own handler is installed
                self.close()
                raise SourceError(f"{_label(spec)}: interrupted while waiting for the first frame") from None
            if self._error:
                raise self._start_failure(self._error)
            if self._ended and self._queue.empty():
                self.close()
                raise SourceError(f"{_label(spec)}: the pipeline ended before its first frame")
            if time.monotonic() > deadline:
                self.close()
                raise SourceError(f"{_label(spec)}: no frame within {start_timeout:.0f} s")
        caps = self.appsink.get_static_pad("sink").get_current_caps()
        s = caps.get_structure(0) if caps is not None else None
        ok, num, den = s.get_fraction("framerate") if s is not None else (False, 0, 1)
        self.fps = Fraction(num, den) if ok and num > 0 else None
        self.time_base = Fraction(1, 90000)
        self.size = (s.get_value("width"), s.get_value("height")) if s is not None else None

    def _start_failure(self, reason: str) -> SourceError:
        self._poll_bus(0.5)
        reason = self._error or reason
        self.close()
        return SourceError(f"{_label(self.spec)}: {reason}")

    def _poll_bus(self, timeout_s: float) -> None:
        Gst = self.Gst
        msg = self.bus.timed_pop_filtered(int(timeout_s * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.EOS)
        while msg is not None:
            if msg.type == Gst.MessageType.ERROR and self._error is None:
                self._error = _bus_error(Gst, msg)
            elif msg.type == Gst.MessageType.EOS:
                self._ended = True
            msg = self.bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)

    def _on_sample(self, appsink):  # GStreamer's streaming thread
        Gst = self.Gst
        sample = appsink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        buf = sample.get_buffer()
        capture = None
        if self.live and buf.pts != Gst.CLOCK_TIME_NONE:
            clock = self.pipeline.get_clock()
            segment = sample.get_segment()
            running = segment.to_running_time(Gst.Format.TIME, buf.pts) if segment is not None else buf.pts
            if clock is not None and running != Gst.CLOCK_TIME_NONE:
                age = clock.get_time() - self.pipeline.get_base_time() - running
                capture = time.perf_counter() - max(age, 0) / 1e9
        image = _rgb_array(Gst, sample, self._cache)
        item = (image, None if buf.pts == Gst.CLOCK_TIME_NONE else buf.pts, capture)
        if self.live:
            while True:
                try:
                    self._queue.put_nowait(item)
                    break
                except queue.Full:
                    try:  # the freshest frame wins: drop the oldest
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        else:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            else:
                return Gst.FlowReturn.FLUSHING
        return Gst.FlowReturn.OK

    def __iter__(self):
        index = 0
        while not self._stop.is_set():
            try:
                image, pts, capture = self._queue.get(timeout=0.05)
            except queue.Empty:
                self._poll_bus(0)
                if self._queue.empty():
                    if self._error:
                        raise SourceError(f"{_label(self.spec)}: {self._error}")
                    if self._ended:
                        break
                continue
            frame = Frame(index=index, image=image, t_source=time.perf_counter())
            if pts is not None:
                if self._first_pts is None:
                    self._first_pts = pts
                frame.pts = round((pts - self._first_pts) * 90000 / 1_000_000_000)
                frame.time_base = self.time_base
            if capture is not None:
                frame.stamps["capture"] = capture
            yield frame
            index += 1

    def close(self) -> None:
        self._stop.set()
        if self.pipeline is not None:
            self.pipeline.set_state(self.Gst.State.NULL)


# --------------------------------------------------------------------------- sink
class GstSink(Sink):
    """Frames into a GStreamer pipeline starting with ``appsrc``; closing sends EOS and waits for
    it, so muxers write their index and the file plays."""
    kind = "gstreamer"

    def __init__(self, spec: str, text: str, fps: Optional[Fraction], live: bool = False,
                 final_path: Optional[str] = None, eos_timeout: float = 30.0):
        Gst = _gst()
        self.Gst, self.spec = Gst, spec
        self.fps = Fraction(fps) if fps else Fraction(30)
        self.final_path, self.temp_path = final_path, None
        if final_path is not None:
            target = Path(final_path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"cannot create {target.parent}: {exc.strerror}") from None
            self.temp_path = str(target.with_name(f".{target.name}.part"))
            text = text % {"location": _quote(self.temp_path)}
        self.text = text
        self.eos_timeout = eos_timeout
        self.pipeline = _parse(Gst, text, spec, SinkError)
        srcs = _find_by_factory(self.pipeline, "appsrc")
        if len(srcs) != 1:
            raise SinkError(f"{_label(spec)}: the pipeline needs exactly one appsrc (found {len(srcs)})")
        self.appsrc = srcs[0]
        self.appsrc.set_property("format", Gst.Format.TIME)
        self.appsrc.set_property("is-live", bool(live))
        # push_buffer blocks while 8 frames wait: backpressure instead of unbounded memory
        self.appsrc.set_property("block", True)
        self.bus = self.pipeline.get_bus()
        # Capture -> encoded latency is taken where the encoder's output leaves it: push-buffer
        # returns before the (asynchronous) encoder has seen the frame.
        self.capture_latency = None
        self._captures: dict[int, float] = {}
        encoders = [e for e in _elements(self.pipeline)
                    if e.get_factory() is not None and "Encoder" in (e.get_factory().get_metadata("klass") or "")]
        if encoders:
            self.capture_latency = LatencyHistogram()
            encoders[0].get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_encoded)
        self.size: Optional[tuple[int, int]] = None
        self.rescaled = 0
        self.frames = 0
        self._last_pts = -1
        self._lock = threading.Lock()
        self._closed = False
        self._error: Optional[str] = None
        if self.pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            self._check_bus(0.5)
            reason = self._error or "cannot start the pipeline"
            self.pipeline.set_state(Gst.State.NULL)
            self._remove_temp()
            raise SinkError(f"{_label(spec)}: {reason}")

    def _on_encoded(self, pad, info):  # GStreamer's streaming thread
        buf = info.get_buffer()
        if buf is None:
            return self.Gst.PadProbeReturn.OK
        # Encoders shift time stamps (x264enc adds 1000 h so that DTS stays positive) and shift
        # their segment alike: the running time is what still equals the pushed time stamp.
        pts = buf.pts
        event = pad.get_sticky_event(self.Gst.EventType.SEGMENT, 0)
        if event is not None:
            pts = event.parse_segment().to_running_time(self.Gst.Format.TIME, pts)
        capture = self._captures.pop(pts, None)
        if capture is not None:
            self.capture_latency.add(time.perf_counter() - capture)
        return self.Gst.PadProbeReturn.OK

    def _check_bus(self, timeout_s: float = 0) -> bool:
        """Reads errors from the bus; True once EOS has arrived."""
        Gst = self.Gst
        eos = False
        msg = self.bus.timed_pop_filtered(int(timeout_s * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.EOS)
        while msg is not None:
            if msg.type == Gst.MessageType.ERROR and self._error is None:
                self._error = _bus_error(Gst, msg)
            elif msg.type == Gst.MessageType.EOS:
                eos = True
            msg = self.bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        return eos

    def _start(self, w: int, h: int) -> None:
        Gst = self.Gst
        self.size = (w, h)
        self.stride = (w * 3 + 3) & ~3  # GStreamer's default row stride for packed RGB
        caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},"
                                    f"framerate={self.fps.numerator}/{self.fps.denominator}")
        self.appsrc.set_property("caps", caps)
        self.appsrc.set_property("max-bytes", 8 * self.stride * h)
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._check_bus(0.5)
            raise SinkError(f"{_label(self.spec)}: {self._error or 'cannot start the pipeline'}")

    def write(self, frame: Frame) -> None:
        Gst = self.Gst
        with self._lock:
            if self._closed:
                return
            # appsrc takes packed RGB: decoded planes are converted here, the sink's one conversion
            from .frames import to_rgb
            image = to_rgb(frame.image, frame.fmt, frame.colour)
            h, w = image.shape[:2]
            if self.size is None:
                # 4:2:0 encoders need even sizes: drop the last row/column of odd outputs
                self._start(w - w % 2, h - h % 2)
            tw, th = self.size
            if (w, h) != (tw, th):
                if (w - w % 2, h - h % 2) != (tw, th):
                    self.rescaled += 1
                    from PIL import Image
                    image = np.asarray(Image.fromarray(image).resize((tw, th), Image.BICUBIC))
                else:
                    image = image[:th, :tw]
            if self.stride != tw * 3:
                padded = np.zeros((th, self.stride), np.uint8)
                padded[:, :tw * 3] = image.reshape(th, tw * 3)
                image = padded
            buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(image).tobytes())
            duration = int(Gst.SECOND / self.fps)
            if frame.pts is not None and frame.time_base is not None:
                pts = int(frame.pts * Fraction(frame.time_base) * Gst.SECOND)
            else:
                pts = self.frames * duration
            pts = max(pts, self._last_pts + 1)
            self._last_pts = pts
            buf.pts, buf.dts, buf.duration = pts, Gst.CLOCK_TIME_NONE, duration
            if self.capture_latency is not None and "capture" in frame.stamps:
                if len(self._captures) > 1000:  # frames an encoder never returned: forget the oldest
                    self._captures.pop(next(iter(self._captures)))
                self._captures[pts] = frame.stamps["capture"]
            ret = self.appsrc.emit("push-buffer", buf)
            self._check_bus()
            if self._error or ret != Gst.FlowReturn.OK:
                raise SinkError(f"{_label(self.spec)}: {self._error or f'push-buffer returned {ret.value_nick}'}")
            self.frames += 1

    def close(self) -> None:
        Gst = self.Gst
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.size is not None and self._error is None:
                self.appsrc.emit("end-of-stream")
                deadline = time.monotonic() + self.eos_timeout
                while not self._check_bus(0.1) and self._error is None:
                    if time.monotonic() > deadline:
                        self._error = f"no end of stream within {self.eos_timeout:.0f} s"
                        break
        finally:
            self.pipeline.set_state(Gst.State.NULL)
        if self.temp_path is not None:
            if self.frames and self._error is None:
                os.replace(self.temp_path, self.final_path)
            else:
                self._remove_temp()
        if self._error is not None:
            raise SinkError(f"{_label(self.spec)}: {self._error}")

    def _remove_temp(self) -> None:
        if self.temp_path is not None:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- entry points
def open_gst_source(spec: str, queue_size: int = 4) -> GstSource:
    if spec.startswith("camera:"):
        _require(spec, ["v4l2src", "decodebin", "videoconvert", "appsink"])
    else:
        _require(spec, ["videoconvert", "appsink"])
    text, notes = source_pipeline(spec)
    _say(f"source {text}" + (f"  [{'; '.join(notes)}]" if notes else ""))
    src = GstSource(spec, text, queue_size=queue_size)
    src.decoder_note = "GStreamer: " + ("; ".join(notes) if notes else "the given pipeline")
    _say(f"source {'live' if src.live else 'not live'}, {src.size[0]}x{src.size[1]}"
         + (f" at {float(src.fps):.3g} fps" if src.fps else ", frame rate unknown")
         + (f"; at most {src._queue.maxsize} frames queued, older ones dropped" if src.live else ""))
    return src


def open_gst_sink(spec: str, source: Source, crf: Optional[int] = None) -> GstSink:
    _require(spec, ["appsrc", "videoconvert"], error=SinkError)
    live = bool(getattr(source, "live", False))
    text, notes, path = sink_pipeline(spec, crf=crf, live=live)
    sink = GstSink(spec, text, source.fps, live=live, final_path=path)
    sink.encoder = "GStreamer: " + ("; ".join(notes) if notes else "the given pipeline")
    _say(f"sink {sink.text}" + (f"  [{'; '.join(notes)}]" if notes else ""))
    return sink
