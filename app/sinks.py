"""Frame sinks, all through PyAV (no ffmpeg subprocess) and Pillow for still images; the sources
are in :mod:`app.sources`, the :class:`~app.endpoints.Frame` they produce and the :class:`Sink`
interface in :mod:`app.endpoints`, GStreamer sinks in :mod:`app.gst`.

Sinks (:func:`open_sink`)
    ``out.mp4|.mkv|.mov|.avi|.webm``  a video file: the source's frame rate and time base, audio
                            stream copied (remuxed) where the source has one
    ``out_dir/``            one PNG per frame (named after the source image, or ``%06d.png``)
    ``null``                discard (benchmarks)

Resolution changes: image folders keep every image at its own size. In a video the output size
is fixed by the first frame; later frames of another size are scaled (bicubic, in the encoder's
``reformat``) to that size, so the file stays one playable stream with one resolution.
"""
from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from .endpoints import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, Frame, Passthrough, Sink, SinkError, Source,
                        first_line, require_av)

__all__ = ["SinkError", "open_sink"]


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
            raise SinkError(f"{folder}: cannot create the output folder ({exc.strerror or first_line(exc)})") from None
        from lcoan.safeio import remove_orphans
        for name in self.names.values():  # what a killed run left of these images (lock-aware: not a live run's)
            remove_orphans(self.folder / name)

    def write(self, frame: Frame) -> None:
        name = self.names.get(frame.path) if frame.path else None
        if name is None:
            name = f"{Path(frame.name).stem}{self.suffix}.png" if frame.name else f"{frame.index:06d}{self.suffix}.png"
        _save_png(self.folder / name, _rgb(frame))


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
                            f"({exc.strerror or first_line(exc)})") from None

    def write(self, frame: Frame) -> None:
        _save_png(self.path, _rgb(frame))


def _rgb(frame: Frame) -> np.ndarray:
    from .frames import to_rgb
    return to_rgb(frame.image, frame.fmt, frame.colour)


DEFAULT_PRESET = "veryfast"   # x264's real-time presets: 1080p at 40+ fps on 2 cores (medium: 20)
_NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
_OPENS: dict = {}


def codec_opens(name: str) -> Optional[str]:
    """None when encoder ``name`` opens here (a 256x256 yuv420p context), else why not (one line).
    NVENC is listed by every PyAV wheel but opens only on a driver with an encoder (no H100/H200)."""
    if name not in _OPENS:
        import av
        if name not in av.codecs_available:
            _OPENS[name] = "not in this FFmpeg build"
        else:
            try:
                ctx = av.CodecContext.create(name, "w")
                ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
                ctx.time_base = Fraction(1, 30)
                ctx.open()
                _OPENS[name] = None
            except Exception as exc:
                _OPENS[name] = f"does not open here ({first_line(exc)})"
    return _OPENS[name]


def choose_encoder(path: str, codec: Optional[str] = None) -> tuple[str, str]:
    """(encoder, why) for a video file: ``codec`` where it opens, else (or for ``auto``) NVENC
    where it opens, else libx264, else what the container takes."""
    suffix = Path(path).suffix.lower()
    asked = None if codec in (None, "auto") else codec
    why_not = codec_opens(asked) if asked else None
    if asked and why_not is None:
        return asked, "asked for"
    fallback = f"--codec {asked} {why_not}; " if asked else ""
    if suffix == ".webm":
        order = ["libvpx-vp9", "libvpx"]
    elif suffix == ".avi":
        order = ["mpeg4"]
    else:
        order = ["h264_nvenc", "libx264", "libopenh264", "mpeg4"]
    notes = []
    for name in order:
        reason = codec_opens(name)
        if reason is None:
            return name, fallback + ("; ".join(notes) + "; " if notes else "") + ("auto" if not notes else "fallback")
        if name in _NVENC:
            notes.append(f"{name} {reason.split(' (')[0]}")
    return "mpeg4", fallback + "nothing else opens"


class VideoSink(Sink):
    """Encode to a video file; output size is fixed by the first frame (later sizes are scaled)."""
    kind = "video"

    def __init__(self, path: str, fps: Optional[Fraction], time_base: Optional[Fraction],
                 audio=None, codec: Optional[str] = None, crf: Optional[int] = None,
                 preset: Optional[str] = None, realtime: bool = False, colour=None):
        av = require_av()
        self.path = path
        self.fps = Fraction(fps) if fps else Fraction(30)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.codec, self.codec_note = choose_encoder(path, codec)
        self.crf, self.preset, self.realtime, self.colour = crf, preset or DEFAULT_PRESET, realtime, colour
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
            raise SinkError(f"cannot write {path}: {first_line(exc)}") from None
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
            stream.options = {"crf": str(self.crf if self.crf is not None else 18), "preset": self.preset}
            if self.realtime:  # no frame look-ahead or B-frame delay: a frame leaves as soon as it is coded
                stream.options["tune"] = "zerolatency"
        elif self.codec in _NVENC:
            stream.options = {"preset": "p4", "tune": "ll" if self.realtime else "hq", "rc": "vbr",
                              "cq": str(self.crf if self.crf is not None else 23)}
        elif self.codec == "mpeg4":
            stream.codec_context.bit_rate = max(2_000_000, width * height * 8)
            stream.codec_context.qmin, stream.codec_context.qmax = 2, 6
        if self.colour is not None:  # the output plays with the input's colours (the planes were not converted)
            self.colour.tag(stream.codec_context)
        self.stream, self.size = stream, (width, height)

    @property
    def encoder(self) -> str:
        opts = ""
        if self.codec in ("libx264", "libx265"):
            opts = f" preset {self.preset}" + (" tune zerolatency" if self.realtime else "")
        return f"{self.codec}{opts} ({self.codec_note})"

    def _video_frame(self, frame: Frame):
        """The encoder's frame: yuv420p planes are wrapped as they are (no swscale); anything else,
        or another size, goes through swscale once."""
        import av
        from .frames import frame_size
        tw, th = self.size
        w, h = frame_size(frame.image, frame.fmt)
        vf = av.VideoFrame.from_ndarray(frame.image, format=frame.fmt)
        if frame.fmt == "yuv420p" and (w, h) == (tw, th):
            return vf, w, h
        if frame.colour is not None:
            frame.colour.tag(vf)
        return vf.reformat(width=tw, height=th, format="yuv420p", interpolation="BICUBIC"), w, h

    def write(self, frame: Frame) -> None:
        with self._lock:
            if self._closed:
                return
            if self.stream is None:
                from .frames import frame_size
                self._open_stream(*frame_size(frame.image, frame.fmt))
                for packet in self._pending_audio:
                    self._mux_audio(packet)
                self._pending_audio.clear()
            vf, w, h = self._video_frame(frame)
            if (w - w % 2, h - h % 2) != self.size:
                self.rescaled += 1
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
              crf: Optional[int] = None, scale: Optional[int] = None, preset: Optional[str] = None,
              realtime: bool = False) -> Sink:
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
        return VideoSink(spec, source.fps, source.time_base, audio=source.audio, codec=codec, crf=crf,
                         preset=preset, realtime=realtime, colour=getattr(source, "colour", None))
    if suffix in IMAGE_SUFFIXES:
        if getattr(source, "total", None) != 1 or source.kind != "images":
            raise SinkError(f"{spec}: an image file takes one frame; give a folder (one PNG per frame) or a video file")
        return SingleImageSink(spec, inputs=inputs)
    return ImageSink(spec, files=list(getattr(source, "files", []) or []), inputs=inputs,
                     suffix=f"_x{scale}" if scale else "")
