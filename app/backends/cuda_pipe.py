"""Overlapped host<->device copies for the CUDA backends (torch, tensorrt)."""
from __future__ import annotations

import threading

import numpy as np

from .base import Pending


def bad_frames(finite: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(~np.asarray(finite, dtype=bool))]


class CudaPipe:
    """Overlapped copies for a CUDA backend: ``SLOTS`` sets of pinned host buffers and three streams.
    :meth:`submit` copies a uint8 batch into a free slot, queues its upload (upload stream), the
    ``step`` (compute stream, after the upload's event) and the download (download stream, after
    the step's event), and returns at once; so batch k+1's upload and batch k-1's download run
    while batch k computes. A slot is reused once :meth:`Pending.result` has read its output."""
    SLOTS = 3

    def __init__(self, torch, dev):
        self.torch, self.dev = torch, dev
        self.stream, self.up, self.down = (torch.cuda.Stream(dev) for _ in range(3))
        self.slots = [_Slot(torch) for _ in range(self.SLOTS)]
        self.next, self.cancelled = 0, False

    def submit(self, batch: np.ndarray, step) -> "Pending":
        """``step``: device uint8 batch -> (device uint8 output, device bool per-frame finite flags)."""
        torch = self.torch
        slot = self.slots[self.next % len(self.slots)]
        self.next += 1
        while not slot.free.wait(0.1):  # the post stage still reads this slot's last output
            if self.cancelled:
                raise RuntimeError("cancelled while waiting for a free pinned buffer")
        slot.free.clear()
        pin_in = slot.buffer("in", batch.shape, torch.uint8)
        pin_in.numpy()[...] = batch   # while the GPU still runs the previous batch
        with torch.cuda.stream(self.up):
            x = pin_in.to(self.dev, non_blocking=True)
            slot.uploaded.record(self.up)
        self.stream.wait_event(slot.uploaded)
        with torch.cuda.stream(self.stream):
            x.record_stream(self.stream)
            slot.start.record(self.stream)
            out, finite = step(x)
            slot.end.record(self.stream)
        self.down.wait_event(slot.end)
        with torch.cuda.stream(self.down):
            out.record_stream(self.down)
            finite.record_stream(self.down)
            pin_out = slot.buffer("out", out.shape, torch.uint8)
            pin_ok = slot.buffer("ok", finite.shape, torch.bool)
            pin_out.copy_(out, non_blocking=True)
            pin_ok.copy_(finite, non_blocking=True)
            slot.downloaded.record(self.down)
        return _CudaPending(slot, pin_out, pin_ok)


class _Slot:
    """One set of pinned host buffers and the CUDA events that say when each copy is done."""

    def __init__(self, torch):
        self.torch = torch
        self.uploaded, self.downloaded = torch.cuda.Event(), torch.cuda.Event()
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.free = threading.Event()
        self.free.set()
        self._buffers: dict = {}

    def buffer(self, key: str, shape, dtype):
        buf = self._buffers.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape):
            # page-locked: the DMA engine copies it without a staging copy, and asynchronously
            buf = self._buffers[key] = self.torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
        return buf


class _CudaPending(Pending):
    def __init__(self, slot: _Slot, out, ok):
        self.slot, self.out, self.ok = slot, out, ok

    def result(self):
        slot = self.slot
        try:
            slot.downloaded.synchronize()
            self.device_ms = slot.start.elapsed_time(slot.end)
            return self.out.numpy().copy(), bad_frames(self.ok.numpy())
        finally:
            slot.free.set()
