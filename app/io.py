"""Frame sources and sinks, all through PyAV (no ffmpeg subprocess) and Pillow for still images.

Sources (:func:`open_source`)
    ``clip.mp4``            any container/codec FFmpeg reads; audio is passed on for remuxing
    ``frames/``             a folder of images (sorted by name)
    ``shots/*.png``         a glob of images
    ``frames_%04d.png``     an image-sequence pattern (printf style, sorted by number)
    ``camera:0``            ``/dev/video0`` through FFmpeg's v4l2 input format
    ``synthetic:N[xWxH]``   N random frames of W x H (default 16 x 16) at 30 fps, for soak tests

Sinks (:func:`open_sink`)
    ``out.mp4|.mkv|.mov|.avi|.webm``  a video file: the source's frame rate and time base, audio
                            stream copied (remuxed) where the source has one
    ``out_dir/``            one PNG per frame (named after the source image, or ``%06d.png``)
    ``null``                discard (benchmarks)

Corrupt input is skipped and counted, never fatal: a video packet the decoder rejects, a frame
FFmpeg flags as corrupt, a packet the decoder silently drops (counted as packets with data minus
decoded frames) or an image file that cannot be read.

Resolution changes: image folders keep every image at its own size. In a video the output size
is fixed by the first frame; later frames of another size are scaled (bicubic, in the encoder's
``reformat``) to that size, so the file stays one playable stream with one resolution.
"""
from __future__ import annotations

import glob as globlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

__all__ = ["Frame", "Passthrough", "SourceError", "SinkError", "open_source", "open_sink",
           "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts")


class SourceError(RuntimeError):
    """An input that cannot be opened at all (one line)."""


class SinkError(RuntimeError):
    """An output that cannot be written (one line)."""


@dataclass
class Frame:
    """One decoded frame on its way through the pipeline."""
    index: int                     # position in the source (0-based, counting good frames)
    image: np.ndarray              # HxWx3 uint8 RGB (LR in, SR after inference)
    pts: Optional[int] = None
    time_base: Optional[Fraction] = None
    name: Optional[str] = None     # source file name for image inputs
    t_source: float = 0.0          # perf_counter() when the frame left the decoder
    lr: Optional[np.ndarray] = None  # the LR image kept for previews
    stamps: dict = field(default_factory=dict)


@dataclass
class Passthrough:
    """A non-video item (an audio packet) carried along the pipeline to the sink."""
    packet: object


def _require_av():
    try:
        import av  # noqa: F401
    except ImportError:
        raise SourceError("video input/output needs PyAV: pip install 'lcoan-edge[app]' (av)") from None
    import av
    return av


# --------------------------------------------------------------------------- sources
class Source:
    fps: Optional[Fraction] = None     # nominal frame rate (None: unknown, e.g. images)
    time_base: Optional[Fraction] = None
    total: Optional[int] = None        # frame count if known
    audio = None                       # input audio stream (for remuxing) or None
    live = False                       # frames arrive in real time (camera)
    kind = "source"

    def __init__(self):
        self.corrupt = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Frame | Passthrough]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class VideoSource(Source):
    kind = "video"

    def __init__(self, path: str, fmt: Optional[str] = None, options: Optional[dict] = None,
                 live: bool = False):
        super().__init__()
        av = _require_av()
        self.path, self.live = path, live
        try:
            self.container = av.open(path, format=fmt, options=options or {})
        except Exception as exc:  # FileNotFoundError, InvalidDataError, device errors
            raise SourceError(f"cannot open {path}: {_one_line(exc)}") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{path}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.fps = Fraction(rate) if rate else Fraction(30)
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.total = self.stream.frames or None
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        self.packets = 0
        self.decoded = 0

    def _frames(self, packet) -> list:
        try:
            return list(packet.decode())
        except Exception:  # InvalidDataError and friends: the packet is damaged
            return []

    def __iter__(self):
        streams = [self.stream] + ([self.audio] if self.audio is not None else [])
        index = 0
        failures = 0
        demux = self.container.demux(*streams)
        while not self._stop.is_set():
            try:
                packet = next(demux)
            except StopIteration:
                break
            except Exception:  # a damaged container packet: resume demuxing after it
                failures += 1
                self.corrupt += 1
                if failures > 100:
                    break
                demux = self.container.demux(*streams)
                continue
            if packet.stream.type == "audio":
                if packet.dts is not None:
                    yield Passthrough(packet)
                continue
            is_flush = packet.size == 0
            if not is_flush:
                self.packets += 1
            for out in self._good_frames(self._frames(packet), index):
                yield out
                index += 1
        if not self._stop.is_set():
            try:  # drain delayed frames (B-frames, frame threads)
                for out in self._good_frames(self.stream.codec_context.decode(None), index):
                    yield out
                    index += 1
            except Exception:
                pass
            # Packets with data that produced no frame were rejected or dropped by the decoder.
            self.corrupt += max(0, self.packets - self.decoded)

    def _good_frames(self, frames, index: int):
        """Decoded frames as ``Frame`` from ``index`` on; frames FFmpeg flags corrupt are counted and skipped."""
        for frame in frames:
            self.decoded += 1
            if frame.is_corrupt:
                self.corrupt += 1
                continue
            yield self._to_frame(frame, index)
            index += 1

    def _to_frame(self, frame, index: int) -> Frame:
        image = frame.to_ndarray(format="rgb24")
        return Frame(index=index, image=image, pts=frame.pts, time_base=frame.time_base or self.time_base,
                     t_source=time.perf_counter())

    def close(self) -> None:
        self.container.close()


class ImageSource(Source):
    kind = "images"

    def __init__(self, files: list[str], label: str):
        super().__init__()
        if not files:
            raise SourceError(f"{label}: no image files found")
        self.files, self.total = files, len(files)

    def __iter__(self):
        from PIL import Image
        index = 0
        for path in self.files:
            if self._stop.is_set():
                break
            try:
                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
            except Exception:  # truncated, not an image, unreadable
                self.corrupt += 1
                continue
            yield Frame(index=index, image=np.ascontiguousarray(image), name=Path(path).name,
                        t_source=time.perf_counter())
            index += 1


class SyntheticSource(Source):
    """``count`` random frames of ``width x height`` with 30 fps time stamps (soak tests)."""
    kind = "synthetic"

    def __init__(self, count: int, width: int = 16, height: int = 16, fps: int = 30, seed: int = 0):
        super().__init__()
        self.total, self.width, self.height = count, width, height
        self.fps, self.time_base = Fraction(fps), Fraction(1, fps)
        self.rng = np.random.default_rng(seed)
        self.pool = [self.rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]

    def __iter__(self):
        for i in range(self.total):
            if self._stop.is_set():
                break
            yield Frame(index=i, image=self.pool[i % len(self.pool)].copy(), pts=i,
                        time_base=self.time_base, t_source=time.perf_counter())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _natural_key(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(path))]


def _sequence_files(pattern: str) -> list[str]:
    """Files matching a printf pattern such as ``frames_%04d.png``, sorted by number."""
    folder, name = os.path.split(pattern)
    match = re.search(r"%(0?)(\d*)d", name)
    assert match is not None
    width = match.group(2)
    digits = rf"\d{{{int(width)}}}" if match.group(1) and width else r"\d+"
    regex = re.compile("^" + re.escape(name[:match.start()]) + f"({digits})"
                       + re.escape(name[match.end():]) + "$")
    folder = folder or "."
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, f)) for f in os.listdir(folder)
             if (m := regex.match(f))]
    return [p for _, p in sorted(found)]


def open_source(spec: str, queue_size: int = 4) -> Source:
    """The source for a command-line INPUT (see the module docstring; GStreamer inputs in
    :mod:`app.gst`)."""
    if spec.startswith(("gst:", "csi:", "rtsp://", "rtsps://", "camera:")):
        from . import gst
        if gst.wants_source(spec):
            return gst.open_gst_source(spec, queue_size=queue_size)
    if spec.startswith("camera:"):
        av = _require_av()
        device = spec.split(":", 1)[1] or "0"
        path = f"/dev/video{device}" if device.isdigit() else device
        if "v4l2" not in av.formats_available:
            raise SourceError(f"{spec}: this FFmpeg build has no v4l2 input; install PyAV built "
                              "with libavdevice v4l2 support (e.g. a distro FFmpeg + pip install av --no-binary av)")
        return VideoSource(path, fmt="v4l2", live=True)
    if spec.startswith("synthetic:"):
        match = re.fullmatch(r"synthetic:(\d+)(?:x(\d+)x(\d+))?", spec)
        if not match:
            raise SourceError(f"{spec}: expected synthetic:N or synthetic:NxWxH")
        n, w, h = match.groups()
        return SyntheticSource(int(n), int(w or 16), int(h or 16))
    if os.path.isdir(spec):
        files = sorted((str(p) for p in Path(spec).iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        return ImageSource(files, spec)
    if re.search(r"%0?\d*d", os.path.basename(spec)):
        return ImageSource(_sequence_files(spec), spec)
    if any(ch in spec for ch in "*?["):
        files = sorted((p for p in globlib.glob(spec)
                        if os.path.isfile(p) and Path(p).suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        return ImageSource(files, spec)
    if not os.path.exists(spec):
        raise SourceError(f"{spec}: no such file, folder, pattern or camera")
    if Path(spec).suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([spec], spec)
    return VideoSource(spec)


# --------------------------------------------------------------------------- sinks
class Sink:
    kind = "sink"

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def write_passthrough(self, item: Passthrough) -> None:
        pass

    def close(self) -> None:
        pass


class NullSink(Sink):
    kind = "null"

    def write(self, frame: Frame) -> None:
        pass


class ImageSink(Sink):
    kind = "images"

    def __init__(self, folder: str):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create {folder}: {exc.strerror}") from None

    def write(self, frame: Frame) -> None:
        from PIL import Image
        name = Path(frame.name).with_suffix(".png").name if frame.name else f"{frame.index:06d}.png"
        Image.fromarray(frame.image).save(self.folder / name)


class SingleImageSink(Sink):
    """One image in, one image file out (format from the suffix)."""
    kind = "image"

    def __init__(self, path: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame) -> None:
        from PIL import Image
        Image.fromarray(frame.image).save(self.path)


def default_codec(path: str) -> str:
    import av
    suffix = Path(path).suffix.lower()
    if suffix == ".webm":
        order = ["libvpx-vp9", "libvpx"]
    elif suffix == ".avi":
        order = ["mpeg4"]
    else:
        order = ["libx264", "h264", "libopenh264", "mpeg4"]
    for name in order:
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:
                continue
    return "mpeg4"


class VideoSink(Sink):
    """Encode to a video file; output size is fixed by the first frame (later sizes are scaled)."""
    kind = "video"

    def __init__(self, path: str, fps: Optional[Fraction], time_base: Optional[Fraction],
                 audio=None, codec: Optional[str] = None, crf: Optional[int] = None):
        av = _require_av()
        self.path = path
        self.fps = Fraction(fps) if fps else Fraction(30)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.codec = codec or default_codec(path)
        self.crf = crf
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.container = av.open(path, "w")
        except Exception as exc:
            raise SinkError(f"cannot write {path}: {_one_line(exc)}") from None
        self.stream = None
        self.audio_out = None
        if audio is not None:
            try:
                self.audio_out = self.container.add_stream_from_template(audio)
            except Exception:  # codec the container cannot hold: drop audio, keep video
                self.audio_out = None
        self.size: Optional[tuple[int, int]] = None
        self.rescaled = 0
        self._next_pts = 0
        self._lock = threading.Lock()
        self._closed = False
        self._pending_audio: list = []

    def _open_stream(self, width: int, height: int) -> None:
        # yuv420p needs even sizes: drop the last row/column of odd outputs.
        width, height = width - width % 2, height - height % 2
        stream = self.container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if self.codec in ("libx264", "libx265"):
            stream.options = {"crf": str(self.crf if self.crf is not None else 18), "preset": "veryfast"}
        elif self.codec == "mpeg4":
            stream.codec_context.bit_rate = max(2_000_000, width * height * 8)
            stream.codec_context.qmin, stream.codec_context.qmax = 2, 6
        self.stream, self.size = stream, (width, height)

    def write(self, frame: Frame) -> None:
        import av
        with self._lock:
            if self._closed:
                return
            h, w = frame.image.shape[:2]
            if self.stream is None:
                self._open_stream(w, h)
                for packet in self._pending_audio:
                    self._mux_audio(packet)
                self._pending_audio.clear()
            vf = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            tw, th = self.size
            if (w, h) != (tw, th):
                if (w - w % 2, h - h % 2) != (tw, th):
                    self.rescaled += 1
                vf = vf.reformat(width=tw, height=th, format="yuv420p", interpolation="BICUBIC")
            if frame.pts is not None and frame.time_base is not None:
                pts = round(frame.pts * Fraction(frame.time_base) / self.time_base)
                pts = max(pts, self._next_pts)
            else:
                pts = self._next_pts
            vf.pts, vf.time_base = pts, self.time_base
            self._next_pts = pts + 1
            for packet in self.stream.encode(vf):
                self.container.mux(packet)

    def _mux_audio(self, packet) -> None:
        try:
            packet.stream = self.audio_out
            self.container.mux(packet)
        except Exception:
            pass

    def write_passthrough(self, item: Passthrough) -> None:
        with self._lock:
            if self._closed or self.audio_out is None:
                return
            if self.stream is None:  # the muxer header needs every stream: hold audio until video opens
                self._pending_audio.append(item.packet)
                return
            self._mux_audio(item.packet)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.stream is not None:
                    for packet in self.stream.encode(None):
                        self.container.mux(packet)
            finally:
                self.container.close()


def open_sink(spec: Optional[str], source: Source, codec: Optional[str] = None,
              crf: Optional[int] = None) -> Sink:
    if spec is None or spec == "null":
        return NullSink()
    if spec.startswith(("gst:", "udp://", "rtsp://", "rtsps://")) or Path(spec).suffix.lower() in VIDEO_SUFFIXES:
        from . import gst
        if gst.wants_sink(spec, codec):
            return gst.open_gst_sink(spec, source, crf=crf)
    suffix = Path(spec).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoSink(spec, source.fps, source.time_base, audio=source.audio, codec=codec, crf=crf)
    if suffix in IMAGE_SUFFIXES:
        if getattr(source, "total", None) != 1 or source.kind != "images":
            raise SinkError(f"{spec}: an image file takes one frame; give a folder (one PNG per frame) or a video file")
        return SingleImageSink(spec)
    return ImageSink(spec)
