"""decode -> pre-process -> infer -> post-process -> encode, one thread per stage, joined by
bounded queues (``queue_size`` items each), so memory stays flat however long the input is.

* Batching: the pre-process stage groups up to ``batch`` consecutive frames of the same size
  (a size change closes the batch); offline it waits for a full batch, in real-time mode it
  takes what is queued.
* Tiling: ``tile`` (LR pixels, :func:`lcoan.tiling.tiled_forward`) runs large frames tile by
  tile; a backend with a fixed engine profile (``max_hw``) is tiled automatically when a frame
  exceeds it, and batches are split to ``max_batch``.
* Real-time mode (``realtime=True``): the decoder follows the source clock (frame time stamps,
  or ``fps`` for images) and drops a frame whenever the next queue is full, i.e. whenever the
  rest of the pipeline cannot keep up; every drop is counted. Offline (default) nothing is
  dropped: frames out == frames in.
* Stop: :meth:`Pipeline.stop` (first Ctrl-C) stops reading and lets the frames in flight finish,
  so the sink is flushed and closed normally; a second call also discards frames in flight.
* Statistics: per-stage latency histograms of fixed size (mean, p50, p99 without keeping one
  number per frame), queue depths, RSS at start and end.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from .backends.base import Backend, Pending
from .endpoints import Frame, Passthrough, SourceError
from .preview import write_preview

__all__ = ["PipelineConfig", "Pipeline", "LatencyHistogram", "rss_mb", "STAGES"]

STAGES = ("decode", "pre", "infer", "post", "encode")
# Each stage but the first reads the queue named after it and puts into the next stage's queue.
_DOWNSTREAM = dict(zip(STAGES, STAGES[1:]))
_END = object()


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class LatencyHistogram:
    """Latencies in a fixed log-spaced histogram (2 % bins from 1 us to 1000 s): constant memory."""
    LO, RATIO = 1e-6, 1.02
    BINS = int(math.log(1e9) / math.log(1.02)) + 2

    def __init__(self):
        self.counts = np.zeros(self.BINS, dtype=np.int64)
        self.count, self.total, self.max = 0, 0.0, 0.0
        self._lock = threading.Lock()

    def add(self, seconds: float, n: int = 1) -> None:
        seconds = max(seconds, 0.0)
        b = 0 if seconds <= self.LO else min(self.BINS - 1, int(math.log(seconds / self.LO) / math.log(self.RATIO)) + 1)
        with self._lock:
            self.counts[b] += n
            self.count += n
            self.total += seconds * n
            self.max = max(self.max, seconds)

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return float("nan")
        cum = np.cumsum(self.counts)
        b = int(np.searchsorted(cum, q * self.count, side="left"))
        if b == 0:
            return self.LO
        # geometric middle of the bin, never above the largest value seen
        return min(self.LO * self.RATIO ** (b - 0.5), self.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def summary_ms(self) -> dict:
        def ms(v):
            return None if v != v else round(v * 1e3, 3)
        return {"mean": ms(self.mean), "p50": ms(self.quantile(0.5)), "p99": ms(self.quantile(0.99)),
                "max": ms(self.max if self.count else float("nan")), "count": self.count}


@dataclass
class PipelineConfig:
    batch: int = 1
    tile: Optional[int] = None        # LR tile size (None: whole frames unless the backend needs tiles)
    overlap: int = 16
    realtime: bool = False
    fps: float = 30.0                 # source clock for inputs without time stamps (images)
    queue_size: int = 4
    preview_dir: Optional[str] = None
    preview_every: int = 0
    preview_crop: int = 64            # LR pixels of the preview crop
    progress: bool = True


class _Batch:
    __slots__ = ("frames", "array", "submit_s")

    def __init__(self, frames: list, array):
        self.frames, self.array, self.submit_s = frames, array, 0.0  # array: uint8, then a Pending


class Pipeline:
    WARM_FRAMES = 100  # RSS is also sampled after this many frames (allocators, encoder warmed up)

    def __init__(self, source, backend, sink, config: Optional[PipelineConfig] = None):
        self.source, self.backend, self.sink = source, backend, sink
        self.cfg = config or PipelineConfig()
        if self.cfg.batch < 1:
            raise ValueError("batch must be >= 1")
        n = max(1, self.cfg.queue_size)
        self.queues = {name: queue.Queue(maxsize=n) for name in ("pre", "infer", "post", "encode")}
        # "capture": capture time stamp -> encoded, for sources that stamp frames (live GStreamer)
        # "submit": host time to hand a batch to the backend (on CUDA it returns before the result)
        self.latency = {name: LatencyHistogram() for name in STAGES + ("submit", "e2e", "capture")}
        self.queue_max = {name: 0 for name in self.queues}
        self.frames_in = self.frames_out = self.dropped = self.discarded = 0
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._failed = threading.Event()
        self.error: Optional[BaseException] = None
        self.error_stage: Optional[str] = None
        self.previews = 0
        self.nonfinite = 0
        self.problems: list[str] = []  # frames not written, one line each (naming them)
        self.interrupted = False
        self.rss_warm: Optional[float] = None
        self.layouts: set = set()  # frame layouts seen (app.frames: yuv420p planes, rgb24)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """First call: stop reading, finish frames in flight. Second call: discard them too."""
        self.interrupted = True
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()
        self.source.stop()

    def _put(self, name: str, item) -> bool:
        q = self.queues[name]
        while not self._failed.is_set():
            try:
                q.put(item, timeout=0.1)
                self.queue_max[name] = max(self.queue_max[name], q.qsize())
                return True
            except queue.Full:
                continue
        return False

    def _get(self, name: str):
        q = self.queues[name]
        while not self._failed.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _fail(self, stage: str, exc: BaseException) -> None:
        if self.error is None:
            self.error, self.error_stage = exc, stage
        self._failed.set()
        self.source.stop()
        cancel = getattr(self.backend, "cancel", None)
        if cancel is not None:  # a backend waiting for buffers the failed stage would have freed
            cancel()

    # ------------------------------------------------------------------ stages
    # A stage is a body that :meth:`_stage` runs in its own thread. The body takes its items from
    # its queue with :meth:`_inbox` / :meth:`_take` (decode: from the source) and puts results
    # downstream; it returns early when a put fails (the run has failed). However the body ends, the
    # end marker follows downstream so the later stages finish and the sink is closed, and an
    # exception fails the whole run (reported by run()).
    def _stage(self, name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail(name, exc)
        finally:
            if name in _DOWNSTREAM:
                self._put(_DOWNSTREAM[name], _END)

    def _take(self, name: str, passthrough: Callable[[Passthrough], object], wait: bool = True):
        """The next item of stage ``name``'s queue, or the end marker; packets copied without
        decoding go to ``passthrough``, in order, and are never returned. ``wait=False``: None
        when nothing is queued."""
        while True:
            if wait:
                item = self._get(name)
            else:
                try:
                    item = self.queues[name].get_nowait()
                except queue.Empty:
                    return None
            if not isinstance(item, Passthrough):
                return item
            passthrough(item)

    def _inbox(self, name: str, passthrough: Callable[[Passthrough], object]) -> Iterator:
        """Stage ``name``'s items (see :meth:`_take`) up to the end marker."""
        while (item := self._take(name, passthrough)) is not _END:
            yield item

    def _forward(self, name: str) -> Callable[[Passthrough], object]:
        return lambda item: self._put(name, item)

    def _decode(self) -> None:
        cfg, src = self.cfg, self.source
        clock0 = None
        t0 = None
        try:
            it = iter(src)
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                if isinstance(item, Passthrough):
                    if not self._put("pre", item):
                        return
                    continue
                self.latency["decode"].add(time.perf_counter() - t)
                with self._count_lock:
                    self.frames_in += 1
                if cfg.realtime:
                    stamp = (float(item.pts * item.time_base) if item.pts is not None and item.time_base
                             else item.index / cfg.fps)
                    if clock0 is None:
                        clock0, t0 = stamp, time.perf_counter()
                    if not src.live:  # a file plays at its own clock; a camera already does
                        wait = t0 + (stamp - clock0) - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                    item.t_source = time.perf_counter()
                    try:
                        self.queues["pre"].put_nowait(item)
                        self.queue_max["pre"] = max(self.queue_max["pre"], self.queues["pre"].qsize())
                    except queue.Full:
                        with self._count_lock:
                            self.dropped += 1
                else:
                    item.t_source = time.perf_counter()
                    if not self._put("pre", item):
                        return
        except SourceError as exc:  # the input broke mid-stream: frames already read still finish
            if self.error is None:
                self.error, self.error_stage = exc, "decode"

    def _preprocess(self) -> None:
        """Group frames of one layout and size into a uint8 batch: no float, no transpose here
        (the backend converts, on its device where it has one)."""
        cfg = self.cfg
        forward = self._forward("infer")
        pending = None
        while True:
            item = pending if pending is not None else self._take("pre", forward)
            pending = None
            if item is _END:
                return
            frames, ended = [item], False
            while len(frames) < cfg.batch:
                # offline a batch waits to be full; in real time it takes what is queued
                nxt = self._take("pre", forward, wait=not cfg.realtime)
                if nxt is None:
                    break
                if nxt is _END:
                    ended = True
                    break
                if nxt.image.shape != item.image.shape or nxt.fmt != item.fmt:  # a change closes the batch
                    pending = nxt
                    break
                frames.append(nxt)
            t = time.perf_counter()
            self.layouts.add(item.fmt)
            array = frames[0].image[None] if len(frames) == 1 else np.stack([f.image for f in frames])
            for f in frames:
                if self._wants_preview(f):
                    f.lr = f.image
                f.image = None
            self.latency["pre"].add((time.perf_counter() - t) / len(frames), len(frames))
            if not self._put("infer", _Batch(frames, array)) or ended:
                return

    def _run_backend(self, x: np.ndarray) -> np.ndarray:
        be, cfg = self.backend, self.cfg
        h, w = x.shape[-2:]
        tile = cfg.tile
        max_hw = getattr(be, "max_hw", None)
        if max_hw is not None and (h > max_hw[0] or w > max_hw[1]):
            fit = min(max_hw) - 2 * cfg.overlap
            if fit < 8:
                raise RuntimeError(f"engine profile max {max_hw} is too small for tiles with overlap {cfg.overlap}")
            tile = min(tile, fit) if tile else fit
        max_batch = getattr(be, "max_batch", None) or x.shape[0]
        if max_batch < x.shape[0]:
            return np.concatenate([self._run_backend(x[i:i + max_batch]) for i in range(0, x.shape[0], max_batch)])
        if not tile or (tile >= h and tile >= w):
            return be.infer(np.ascontiguousarray(x))
        import torch
        from lcoan.tiling import tiled_forward

        def fn(t):
            return torch.from_numpy(be.infer(np.ascontiguousarray(t.numpy())))
        return tiled_forward(fn, torch.from_numpy(x), be.scale, tile=tile, overlap=cfg.overlap).numpy()

    def _needs_tiles(self, h: int, w: int) -> bool:
        max_hw = getattr(self.backend, "max_hw", None)
        tile = self.cfg.tile
        return bool((tile and (tile < h or tile < w)) or (max_hw is not None and (h > max_hw[0] or w > max_hw[1])))

    def _submit(self, item: _Batch):
        """The backend's handle for one batch: its own uint8 path (on CUDA it returns before the
        batch is done, so the next upload overlaps this inference), or the host float path with
        tiles when the frames need them."""
        be = self.backend
        fmt, colour = item.frames[0].fmt, item.frames[0].colour
        from .frames import frame_size
        w, h = frame_size(item.array[0], fmt)
        if self._needs_tiles(h, w):
            return Pending(Backend.run_u8(be, item.array, fmt, colour, infer=self._run_backend))
        return be.submit(item.array, fmt, colour)

    def _infer(self) -> None:
        for item in self._inbox("infer", self._forward("post")):
            if self._abort.is_set():
                with self._count_lock:
                    self.discarded += len(item.frames)
                continue
            t = time.perf_counter()
            item.array = self._submit(item)
            item.submit_s = time.perf_counter() - t
            self.latency["submit"].add(item.submit_s / len(item.frames), len(item.frames))
            if not self._put("post", item):
                return

    def _wants_preview(self, frame: Frame) -> bool:
        return bool(self.cfg.preview_dir and self.cfg.preview_every and frame.index % self.cfg.preview_every == 0)

    def _preview(self, frame: Frame, lr: np.ndarray, sr: np.ndarray) -> None:
        write_preview(self.cfg.preview_dir, frame.index, lr, sr, self.backend.scale, self.cfg.preview_crop,
                      model=getattr(self.backend, "name", "model"))
        self.previews += 1

    def _postprocess(self) -> None:
        for item in self._inbox("post", self._forward("encode")):
            pending = item.array
            out, bad = pending.result()
            t = time.perf_counter()
            n = len(item.frames)
            # infer: the device's own time where the backend measures it (CUDA events), else the
            # host time of the call that ran it
            device_ms = getattr(pending, "device_ms", None)
            self.latency["infer"].add((device_ms / 1e3 if device_ms is not None else item.submit_s) / n, n)
            good = []
            for i, f in enumerate(item.frames):
                if i in bad:  # clipping would save NaN as black and Inf as white: not a picture
                    with self._count_lock:
                        self.nonfinite += 1
                        if len(self.problems) < 1000:
                            self.problems.append(
                                f"frame {f.index}" + (f" ({f.path or f.name})" if f.path or f.name else "")
                                + ": the model output has non-finite values (NaN/Inf); not written")
                    f.lr = None
                    continue
                good.append(f)
                f.image = out[i]
                if f.lr is not None:
                    from .frames import to_rgb
                    self._preview(f, to_rgb(f.lr, f.fmt, f.colour), to_rgb(f.image, f.fmt, f.colour))
                    f.lr = None
            self.latency["post"].add((time.perf_counter() - t) / n, n)
            item.array = None
            for f in good:
                if not self._put("encode", f):
                    return

    def _encode(self) -> None:
        for item in self._inbox("encode", self.sink.write_passthrough):
            t = time.perf_counter()
            self.sink.write(item)
            now = time.perf_counter()
            self.latency["encode"].add(now - t)
            self.latency["e2e"].add(now - item.t_source)
            if "capture" in item.stamps:
                self.latency["capture"].add(now - item.stamps["capture"])
            with self._count_lock:
                self.frames_out += 1
            if self.frames_out == self.WARM_FRAMES:
                self.rss_warm = rss_mb()

    # ------------------------------------------------------------------ run
    def depths(self) -> dict:
        return {name: q.qsize() for name, q in self.queues.items()}

    def run(self, on_tick=None, tick_s: float = 0.25) -> dict:
        """Run to the end (or until :meth:`stop`); returns the summary dict. ``on_tick(self)`` is
        called from this thread about every ``tick_s`` seconds (progress display)."""
        self.rss_start = rss_mb()
        from .frames import CONVERSIONS
        self._conversions0 = CONVERSIONS.count
        self.t_start = time.perf_counter()
        bodies = (self._decode, self._preprocess, self._infer, self._postprocess, self._encode)
        threads = [threading.Thread(target=self._stage, args=(name, body), name=f"app-{name}", daemon=True)
                   for name, body in zip(STAGES, bodies)]
        for th in threads:
            th.start()
        try:
            while threads[-1].is_alive():
                threads[-1].join(tick_s)
                if on_tick is not None:
                    on_tick(self)
        finally:
            for th in threads:
                th.join(5.0)
            self.t_end = time.perf_counter()
            try:
                if self.error is not None and hasattr(self.sink, "discard"):
                    self.sink.discard()  # a failed run publishes no partial file
                else:
                    self.sink.close()  # after Ctrl-C too: the frames so far make a playable file
            except BaseException as exc:  # noqa: BLE001
                if self.error is None:
                    self.error, self.error_stage = exc, "close"
            self.source.close()
        self.rss_end = rss_mb()
        return self.summary()

    def _converted(self) -> dict:
        """Frames swscale converted on the way in (not yuv420p/nv12), and from which formats."""
        from .frames import CONVERSIONS
        return {"count": CONVERSIONS.count - getattr(self, "_conversions0", 0), "from": sorted(CONVERSIONS.formats)}

    def summary(self) -> dict:
        be = self.backend
        wall = max(getattr(self, "t_end", time.perf_counter()) - self.t_start, 1e-9)
        dropped_source = int(getattr(self.source, "dropped", 0))  # a live source's own bounded queue
        dropped = self.dropped + self.discarded + dropped_source
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": dropped,
            "dropped_realtime": self.dropped,
            "dropped_source": dropped_source,
            "discarded_on_interrupt": self.discarded,
            "corrupt": int(getattr(self.source, "corrupt", 0)),
            "rescaled": int(getattr(self.sink, "rescaled", 0)),
            "interrupted": self.interrupted,
            "nonfinite": self.nonfinite,
            "truncated": getattr(self.source, "truncated", None),
            "problems": list(getattr(self.source, "problems", []) or []) + list(self.problems),
            "error": None if self.error is None else f"{self.error_stage}: {type(self.error).__name__}: {self.error}",
            "wall_s": round(wall, 3),
            "fps": round(self.frames_out / wall, 3),
            "backend": be.name,
            "precision": be.precision,
            "device": be.device,
            "scale": be.scale,
            "compiled": bool(getattr(be, "compiled", False)),
            "decoder": getattr(self.source, "decoder_note", None),
            "encoder": getattr(self.sink, "encoder", None),
            "frames_converted": self._converted(),
            "layouts": sorted(self.layouts),
            "batch": self.cfg.batch,
            "tile": self.cfg.tile,
            "realtime": self.cfg.realtime,
            "latency_ms": {name: h.summary_ms() for name, h in self.latency.items()}
            # a sink that encodes asynchronously (GStreamer) times capture -> encoder output itself
            | ({"capture": self.sink.capture_latency.summary_ms()}
               if getattr(self.sink, "capture_latency", None) is not None else {}),
            "queue_depth_max": dict(self.queue_max),
            "previews": self.previews,
            "rss_mb": {"start": round(getattr(self, "rss_start", float("nan")), 1),
                       f"after_{self.WARM_FRAMES}_frames": None if self.rss_warm is None else round(self.rss_warm, 1),
                       "end": round(getattr(self, "rss_end", rss_mb()), 1)},
        }
