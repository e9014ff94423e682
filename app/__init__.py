"""Real-time upscaling app: video files, image folders and cameras through any backend.

    python -m app clip.mp4 -o clip_x2.mp4 --backend onnxruntime --model lcoan.onnx

Modules: :mod:`app.sources` and :mod:`app.sinks` (PyAV sources and sinks), :mod:`app.gst`
(GStreamer sources and sinks), :mod:`app.endpoints` (what they share: frames, interfaces, errors),
:mod:`app.stream` (threaded stages with bounded queues and statistics), :mod:`app.backends`
(torch, onnxruntime, tensorrt, bicubic, triton), :mod:`app.frames` (pixel layouts and colour),
:mod:`app.preview` (side-by-side crops), :mod:`app.cli` (the command line).
See docs/app.md.
"""
from __future__ import annotations

__all__ = ["main", "run"]


def main(argv=None) -> int:
    from .cli import main as _main
    return _main(argv)


def run(input: str, output=None, backend="torch", model=None, **config) -> dict:
    """Programmatic run: open ``input``, upscale through ``backend`` into ``output``; returns the summary."""
    from .backends import load_backend
    from .sinks import open_sink
    from .sources import open_source
    from .stream import Pipeline, PipelineConfig
    be = load_backend(backend, model) if isinstance(backend, str) else backend
    source = open_source(input)
    sink = open_sink(output, source)
    return Pipeline(source, be, sink, PipelineConfig(progress=False, **config)).run()
