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
from lcoan.errors import LcoanError

__all__ = ["Frame", "Passthrough", "SourceError", "SinkError", "open_source", "open_sink",
           "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts")


class SourceError(LcoanError, RuntimeError):
    """An input that cannot be opened at all (one line)."""


class SinkError(LcoanError, RuntimeError):
    """An output that cannot be written (one line)."""


@dataclass
class Frame:
    """One decoded frame on its way through the pipeline."""
    index: int                     # position in the source (0-based, counting good frames)
    image: np.ndarray              # HxWx3 uint8 RGB (LR in, SR after inference)
    pts: Optional[int] = None
    time_base: Optional[Fraction] = None
    name: Optional[str] = None     # source file name for image inputs
    path: Optional[str] = None     # source file path for image inputs (names output files)
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
        self.problems: list[str] = []  # one line each, naming the file: reported even with --quiet
        self.truncated: Optional[str] = None  # why the input looks cut short, or None
        self.inputs: list[str] = []  # files and folders read, which no output may overwrite
        self._stop = threading.Event()

    def problem(self, text: str) -> None:
        if len(self.problems) < 1000:  # a badly damaged stream must not grow memory without bound
            self.problems.append(" ".join(str(text).split()))

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
        self.inputs = [path] if os.path.exists(path) else []
        self.packets = 0
        self.decoded = 0
        self.rejected = 0
        self.seen_end = None  # end time (s) of the last video packet demuxed

    def _at(self, pts) -> str:
        return f"{float(pts * self.time_base):.3f} s" if pts is not None and self.time_base else "unknown time"

    def _frames(self, packet) -> list:
        try:
            return list(packet.decode())
        except Exception as exc:  # InvalidDataError and friends: the packet is damaged
            if packet.size:
                self.rejected += 1
                self.problem(f"{self.path}: a video packet near {self._at(packet.pts)} was rejected by the "
                             f"decoder ({_one_line(exc)}); its frame is skipped")
            return []

    def _expected_end(self) -> Optional[float]:
        """Stream end (s) from the container header, when the header knows it."""
        s, start = self.stream, self.stream.start_time or 0
        if s.duration and s.time_base:
            return float((start + s.duration) * s.time_base)
        if self.container.duration:  # microseconds (AV_TIME_BASE), e.g. Matroska
            return self.container.duration / 1e6 + float(start * s.time_base if s.time_base else 0)
        return None

    def _check_truncated(self) -> None:
        """A file that ends before its header says is reported, never taken for a complete run.

        Two checks: fewer video packets than the header's frame count (MP4/MOV index), or the last
        packet ending more than two frames (and 0.1 s) before the stream's duration. Formats
        without either (MPEG-TS, raw streams) cannot be checked.
        """
        if self.live:
            return
        expected = self.stream.frames or 0
        if expected and self.packets < expected:
            self.truncated = f"{self.packets} of the {expected} frames its header lists"
        else:
            end = self._expected_end()
            tol = max(2.0 / float(self.fps or 30), 0.1)
            if end is not None and self.seen_end is not None and self.seen_end < end - tol:
                self.truncated = f"video ends at {self.seen_end:.3f} s, its header says {end:.3f} s"
        if self.truncated:
            self.problem(f"{self.path}: truncated input: {self.truncated}; the output holds only what was there")

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
            except Exception as exc:  # a damaged container packet: resume demuxing after it
                failures += 1
                self.corrupt += 1
                self.problem(f"{self.path}: damaged container data after packet {self.packets} ({_one_line(exc)})")
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
                if packet.pts is not None and self.time_base:
                    end = float((packet.pts + (packet.duration or 0)) * self.time_base)
                    self.seen_end = end if self.seen_end is None else max(self.seen_end, end)
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
            missing = max(0, self.packets - self.decoded)
            self.corrupt += missing
            if missing > self.rejected:
                self.problem(f"{self.path}: {missing - self.rejected} video packet(s) gave no frame "
                             "(dropped by the decoder as damaged)")
            self._check_truncated()

    def _good_frames(self, frames, index: int):
        """Decoded frames as ``Frame`` from ``index`` on; frames FFmpeg flags corrupt are counted and skipped."""
        for frame in frames:
            self.decoded += 1
            if frame.is_corrupt:
                self.corrupt += 1
                self.problem(f"{self.path}: frame at {self._at(frame.pts)} flagged corrupt by the decoder; skipped")
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
        self.inputs = list(files) + ([label] if os.path.isdir(label) else [])

    def __iter__(self):
        from PIL import Image
        index = 0
        for path in self.files:
            if self._stop.is_set():
                break
            try:
                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
            except Exception as exc:  # truncated, not an image, unreadable
                self.corrupt += 1
                reason = "permission denied" if isinstance(exc, PermissionError) else _one_line(exc)
                self.problem(f"{path}: unreadable image skipped ({reason})")
                continue
            yield Frame(index=index, image=np.ascontiguousarray(image), name=Path(path).name, path=path,
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


def _save_png(path: Path, image: np.ndarray) -> None:
    """One image file, atomically (format from the suffix)."""
    from PIL import Image
    from lcoan.safeio import atomic_output
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format=fmt)


def output_names(files: list[str], suffix: str = "") -> dict[str, str]:
    """Output file name for each input file: ``<stem><suffix>.png`` (``suffix`` ``_x2``, as
    ``lcoan.upscale`` names its outputs), unless several inputs share a stem (``a.jpg`` and
    ``a.png``, or ``a.png`` in two folders): then ``<stem>_<ext><suffix>.png`` and, if that is still
    shared, a ``_<n>`` counter, so that no output overwrites another."""
    stems: dict[str, int] = {}
    for f in files:
        stems[Path(f).stem] = stems.get(Path(f).stem, 0) + 1
    names, used = {}, set()
    for f in files:
        p = Path(f)
        name = (f"{p.stem}{suffix}.png" if stems[p.stem] == 1
                else f"{p.stem}_{p.suffix.lstrip('.').lower()}{suffix}.png")
        base, n = name[:-4], 1
        while name in used:
            n += 1
            name = f"{base}_{n}.png"
        used.add(name)
        names[f] = name
    return names


class ImageSink(Sink):
    kind = "images"

    def __init__(self, folder: str, files: Optional[list[str]] = None, inputs: Optional[list[str]] = None,
                 suffix: str = ""):
        from lcoan.safeio import OutputError, refuse_overwrite
        self.folder = Path(folder)
        self.suffix = suffix
        self.names = output_names(files or [], suffix)
        try:
            # nor the folder the input files are in: outputs there would join the next glob of it
            refuse_overwrite(self.folder, list(inputs or []) + sorted({str(Path(f).parent) for f in files or []}),
                             what="output folder")
            for src, name in self.names.items():
                refuse_overwrite(self.folder / name, inputs or [], what=f"output for {Path(src).name}")
        except OutputError as exc:
            raise SinkError(str(exc)) from None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{folder}: cannot create the output folder ({exc.strerror or _one_line(exc)})") from None

    def write(self, frame: Frame) -> None:
        name = self.names.get(frame.path) if frame.path else None
        if name is None:
            name = f"{Path(frame.name).stem}{self.suffix}.png" if frame.name else f"{frame.index:06d}{self.suffix}.png"
        _save_png(self.folder / name, frame.image)


class SingleImageSink(Sink):
    """One image in, one image file out (format from the suffix), written atomically."""
    kind = "image"

    def __init__(self, path: str, inputs: Optional[list[str]] = None):
        from lcoan.safeio import OutputError, refuse_overwrite
        self.path = Path(path)
        try:
            refuse_overwrite(self.path, inputs or [])
        except OutputError as exc:
            raise SinkError(str(exc)) from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.path.parent}: cannot create the output folder "
                            f"({exc.strerror or _one_line(exc)})") from None

    def write(self, frame: Frame) -> None:
        _save_png(self.path, frame.image)


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
        self.frames = 0
        from lcoan.safeio import AtomicFile, OutputError
        try:  # encoded under a temporary name; renamed only once the file is complete
            self._file = AtomicFile(path)
        except OutputError as exc:
            raise SinkError(str(exc)) from None
        try:
            self.container = av.open(str(self._file.tmp), "w", format=_muxer(path))
        except Exception as exc:
            self._file.discard()
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
            try:
                for packet in self.stream.encode(vf):
                    self.container.mux(packet)
            except OSError as exc:  # full disk, file-size limit: name the output, not the temporary file
                raise self._write_error(exc) from None
            self.frames += 1

    def _write_error(self, exc: OSError) -> SinkError:
        from lcoan.safeio import describe_os_error
        return SinkError(f"{self.path}: cannot write: {describe_os_error(exc)}")

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
        """Flush the encoder, finish the file (the MP4 index is written here), then rename it into
        place. With no frame written nothing is published and :class:`SinkError` says so."""
        from lcoan.safeio import OutputError
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.stream is not None:
                    for packet in self.stream.encode(None):
                        self.container.mux(packet)
                self.container.close()
            except OSError as exc:
                self._discard()
                raise self._write_error(exc) from None
            except BaseException:
                self._discard()
                raise
            if self.stream is None or self.frames == 0:
                self._file.discard()
                raise SinkError(f"{self.path}: no frame to write; nothing written")
            try:
                self._file.commit()
            except OutputError as exc:
                raise SinkError(str(exc)) from None

    def _discard(self) -> None:
        try:
            self.container.close()
        except Exception:  # the file is thrown away anyway
            pass
        self._file.discard()

    def discard(self) -> None:
        """A failed run: drop the temporary file; an earlier file at the path stays as it was."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._discard()


def _muxer(path: str) -> Optional[str]:
    """FFmpeg muxer for the final name (the temporary name keeps the suffix, this is a safeguard)."""
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".m4v": "mp4",
            ".avi": "avi", ".ts": "mpegts"}.get(Path(path).suffix.lower())


def open_sink(spec: Optional[str], source: Source, codec: Optional[str] = None,
              crf: Optional[int] = None, scale: Optional[int] = None) -> Sink:
    if spec is None or spec == "null":
        return NullSink()
    inputs = list(getattr(source, "inputs", []) or [])
    if not spec.startswith(("gst:", "udp://", "rtsp://", "rtsps://")):
        from lcoan.safeio import OutputError, refuse_overwrite
        try:  # whichever sink writes it, an output file is never one of the inputs
            refuse_overwrite(spec, inputs)
        except OutputError as exc:
            raise SinkError(str(exc)) from None
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
        return SingleImageSink(spec, inputs=inputs)
    return ImageSink(spec, files=list(getattr(source, "files", []) or []), inputs=inputs,
                     suffix=f"_x{scale}" if scale else "")
