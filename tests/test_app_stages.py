"""The pipeline's stage protocol (app/stream.py ``_stage``/``_take``/``_inbox``) with in-memory
sources and sinks: packets keep their place among the frames through batching and size changes,
and a stage that fails ends the run with its name, the sink discarded, no thread left waiting."""
import threading

import numpy as np
import pytest

pytest.importorskip("av", reason="app extra not installed")

from app.backends import BicubicBackend  # noqa: E402
from app.stream import Pipeline, PipelineConfig  # noqa: E402
from app.endpoints import Frame, Passthrough, Source  # noqa: E402


class ListSource(Source):
    def __init__(self, items):
        super().__init__()
        self.items, self.closed = items, False

    def __iter__(self):
        yield from self.items

    def close(self):
        self.closed = True


class ListSink:
    def __init__(self):
        self.written, self.closed, self.discarded = [], False, False

    def write(self, frame):
        self.written.append(("frame", frame.index, frame.image.shape))

    def write_passthrough(self, item):
        self.written.append(("packet", item.packet))

    def close(self):
        self.closed = True

    def discard(self):
        self.discarded = True


def _frame(i, h=8, w=10):
    return Frame(index=i, image=np.full((h, w, 3), (10 * i) % 256, np.uint8))


def _items():
    """Frames 0-4 (the size changes at 3) with packets between them."""
    return [Passthrough("a0"), _frame(0), _frame(1), Passthrough("a1"), _frame(2), _frame(3, 6, 6),
            Passthrough("a2"), _frame(4, 6, 6), Passthrough("a3")]


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_packets_keep_their_place_and_every_frame_arrives(batch):
    sink = ListSink()
    s = Pipeline(ListSource(_items()), BicubicBackend(2), sink, PipelineConfig(batch=batch, queue_size=2)).run()
    assert s["error"] is None and s["frames_in"] == s["frames_out"] == 5
    frames = [w for w in sink.written if w[0] == "frame"]
    assert frames == [("frame", 0, (16, 20, 3)), ("frame", 1, (16, 20, 3)), ("frame", 2, (16, 20, 3)),
                      ("frame", 3, (12, 12, 3)), ("frame", 4, (12, 12, 3))]
    packets = [w[1] for w in sink.written if w[0] == "packet"]
    assert packets == ["a0", "a1", "a2", "a3"]
    if batch == 1:  # unbatched, a packet is written exactly where it was read
        order = [w[1] for w in sink.written]
        assert order == ["a0", 0, 1, "a1", 2, 3, "a2", 4, "a3"]
    assert sink.closed and not sink.discarded


class FailsAt(BicubicBackend):
    def __init__(self, at):
        super().__init__(2)
        self.at, self.calls = at, 0

    def run_u8(self, x, fmt, colour=None, infer=None):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("device lost")
        return super().run_u8(x, fmt, colour, infer)


@pytest.mark.parametrize("where", ["infer", "encode"])
def test_a_failing_stage_ends_the_run_and_discards_the_output(where):
    sink, source = ListSink(), ListSource([_frame(i) for i in range(40)])
    backend = BicubicBackend(2)
    if where == "infer":
        backend = FailsAt(3)
    else:
        def write(frame):
            if frame.index == 2:
                raise OSError("disk gone")
            ListSink.write(sink, frame)
        sink.write = write
    before = threading.active_count()
    s = Pipeline(source, backend, sink, PipelineConfig(batch=1, queue_size=1)).run()
    assert s["error"].startswith(f"{where}: ") and ("device lost" in s["error"] or "disk gone" in s["error"])
    assert s["frames_out"] < 40
    assert sink.discarded and not sink.closed and source.closed
    assert threading.active_count() == before, "every stage thread finished"
