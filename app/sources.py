"""Frame sources, all through PyAV (no ffmpeg subprocess) and Pillow for still images; the sinks
are in :mod:`app.sinks`, GStreamer sources in :mod:`app.gst`.

Sources (:func:`open_source`)
    ``clip.mp4``            any container/codec FFmpeg reads; audio is passed on for remuxing
    ``frames/``             a folder of images (sorted by name)
    ``shots/*.png``         a glob of images
    ``frames_%04d.png``     an image-sequence pattern (printf style, sorted by number)
    ``camera:0``            ``/dev/video0`` through FFmpeg's v4l2 input format
    ``synthetic:N[xWxH]``   N random frames of W x H (default 16 x 16) at 30 fps, for soak tests

Corrupt input is skipped and counted, never fatal: a video packet the decoder rejects, a frame
FFmpeg flags as corrupt, a packet the decoder silently drops (counted as packets with data minus
decoded frames) or an image file that cannot be read.

The items sources produce (:class:`Frame`, :class:`Passthrough`), the :class:`Source` interface,
the suffix lists and the PyAV import live in :mod:`app.endpoints`, which the sinks and
:mod:`app.gst` share.
"""
from __future__ import annotations

import glob as globlib
import os
import re
import time
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from .endpoints import (IMAGE_SUFFIXES, LIVE_PREFIXES, VIDEO_SUFFIXES, Frame, Passthrough, Source,
                        SourceError, first_line, require_av)

__all__ = ["Frame", "Passthrough", "SourceError", "open_source", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "LIVE_PREFIXES"]


class VideoSource(Source):
    kind = "video"

    def __init__(self, path: str, fmt: Optional[str] = None, options: Optional[dict] = None,
                 live: bool = False, hwdec: str = "auto"):
        super().__init__()
        av = require_av()
        self.path, self.live = path, live
        try:
            self.container = av.open(path, format=fmt, options=options or {})
        except Exception as exc:  # FileNotFoundError, InvalidDataError, device errors
            raise SourceError(f"cannot open {path}: {first_line(exc)}") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{path}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        from .frames import Colour
        self.colour = Colour.of(self.stream.codec_context, self.stream.codec_context.pix_fmt or "")
        self.decoder, self.decoder_note = open_decoder(self.stream, hwdec, live)
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
            return list(self.decoder.decode(packet))
        except Exception as exc:  # InvalidDataError and friends: the packet is damaged
            if packet.size:
                self.rejected += 1
                self.problem(f"{self.path}: a video packet near {self._at(packet.pts)} was rejected by the "
                             f"decoder ({first_line(exc)}); its frame is skipped")
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
                self.problem(f"{self.path}: damaged container data after packet {self.packets} ({first_line(exc)})")
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
                for out in self._good_frames(self.decoder.decode(None), index):
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
        from .frames import planes_of
        image, fmt = planes_of(frame)
        if index == 0:  # a stream tagged in its frames but not in its header
            from .frames import Colour
            tags = Colour.of(frame, frame.format.name)
            if tags.tagged and not self.colour.tagged:
                self.colour = tags
        return Frame(index=index, image=image, pts=frame.pts, time_base=frame.time_base or self.time_base,
                     t_source=time.perf_counter(), fmt=fmt, colour=self.colour)

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
                reason = "permission denied" if isinstance(exc, PermissionError) else first_line(exc)
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


# NVDEC through FFmpeg's cuvid decoders: they give nv12 in host memory (app.frames de-interleaves
# it with a slice) and open only where an NVIDIA driver is loaded.
_CUVID = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "av1": "av1_cuvid", "vp9": "vp9_cuvid"}


def open_decoder(stream, hwdec: str = "auto", live: bool = False):
    """(codec context, why) for a video stream: NVDEC (``*_cuvid``) where ``hwdec`` allows it and
    the driver opens it, else FFmpeg's software decoder with frame threads."""
    import av
    name = stream.codec_context.name
    soft = stream.codec_context
    kind = getattr(soft.thread_type, "name", str(soft.thread_type)).lower()
    threads = f"software {name}, {soft.thread_count or 'auto'} thread(s), {kind} threading"
    if hwdec in ("off", "none", "cpu") or live:
        return soft, threads + ("" if hwdec in ("off", "none", "cpu") else " (live input)")
    want = _CUVID.get(name) if hwdec in ("auto", "nvdec", "cuda") else hwdec
    if want is None:
        return soft, f"{threads} (no NVDEC decoder for {name})"
    if want not in av.codecs_available:
        return soft, f"{threads} ({want} is not in this FFmpeg build)"
    try:
        ctx = av.CodecContext.create(want, "r")
        if soft.extradata:
            ctx.extradata = soft.extradata
        ctx.width, ctx.height = soft.width, soft.height
        ctx.open()
    except Exception as exc:  # no driver, no GPU, wrong codec: software decode, said in one line
        return soft, f"{threads} ({want} does not open here: {first_line(exc)})"
    return ctx, f"{want} (NVDEC)"


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


def open_source(spec: str, queue_size: int = 4, hwdec: str = "auto") -> Source:
    """The source for a command-line INPUT (see the module docstring; GStreamer inputs in
    :mod:`app.gst`)."""
    if spec.startswith(LIVE_PREFIXES):
        from . import gst
        if gst.wants_source(spec):
            return gst.open_gst_source(spec, queue_size=queue_size)
    if spec.startswith("camera:"):
        av = require_av()
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
    return VideoSource(spec, hwdec=hwdec)
