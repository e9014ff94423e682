"""python -m app INPUT [-o OUTPUT] [--backend tensorrt|onnxruntime|torch|bicubic] [--model M]
[--scale S] [--tile T] [--batch N] [--realtime] [--preview DIR --preview-every N] [--json F]

Upscale a video file, a folder/glob/sequence of images, a camera (``camera:0``) or a synthetic
stream (``synthetic:N[xWxH]``, or ``--synthetic N``) through any backend, with a live progress
bar (fps, per-stage latency, queue depths) and a JSON summary at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Optional

from .backends import BACKENDS, BackendUnavailable, SlowedBackend, load_backend
from .stream import STAGES, Pipeline, PipelineConfig
from .sinks import SinkError, open_sink
from .sources import IMAGE_SUFFIXES, LIVE_PREFIXES, VIDEO_SUFFIXES, open_source
from lcoan.cli import DEFAULT_OVERLAP, PROGRESS_HELP, QUIET_HELP, add_output_arg, add_precision_arg, device_help
# The exit statuses are every tool's (lcoan.errors). EXIT_DAMAGED: the output was written, but from
# damaged input (corrupt or unreadable frames/files skipped, a truncated video, frames whose model
# output was not finite); never 0, it must not look like success.
from lcoan.errors import (EXIT_DAMAGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,  # noqa: F401
                          LcoanError, exit_status, one_line, report, run_cli)


def build_parser() -> argparse.ArgumentParser:
    from lcoan.cli import ArgumentParser
    p = ArgumentParser(prog="python -m app", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("input", nargs="?", help="video file, image folder, glob, pattern (frames_%%04d.png), "
                   "camera:N, csi:N, rtsp://..., 'gst:PIPELINE ! appsink' or synthetic:N[xWxH]")
    add_output_arg(p, "video file (.mp4/.mkv/.mov/.avi/.webm), image folder, 'null', "
                   "'gst:appsrc ! PIPELINE', gst:FILE, udp://HOST:PORT or rtsp://... (GStreamer) "
                   "(default: out/<input stem>_x<scale>.mp4 or out/<folder>_x<scale>/ under the current folder, "
                   "never beside the input; nothing for cameras/synthetic). Images are written as "
                   "<stem>_x<scale>.png, as python -m lcoan.upscale names them")
    p.add_argument("--backend", choices=BACKENDS, help="default: from --model's type (.engine tensorrt, "
                   ".onnx onnxruntime); torch without --model")
    p.add_argument("--model", help="F.engine | F.onnx | W.safetensors | a weights-table name | random:PRESET "
                   "(default: bundled weights, realtime_x2 for video and live inputs, edge_x2 for images)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (default: the model's)")
    p.add_argument("--tile", type=int, help="run frames in tiles of T LR pixels (lcoan.tiling; default: whole frames)")
    p.add_argument("--tile-overlap", dest="overlap", type=int, default=DEFAULT_OVERLAP, metavar="O",
                   help=f"context around each tile in LR pixels (default: {DEFAULT_OVERLAP})")
    p.add_argument("--overlap", dest="overlap", type=int, help=argparse.SUPPRESS)  # the old name
    p.add_argument("--batch", type=int, default=1, help="frames of the same size per inference call (default: 1)")
    p.add_argument("--realtime", action="store_true", help="follow the source clock; drop (and count) frames "
                   "the pipeline cannot keep up with")
    p.add_argument("--fps", type=float, default=30.0, help="clock for image inputs in --realtime mode and "
                   "frame rate of video made from images (default 30)")
    p.add_argument("--preview", metavar="DIR", help="write labelled bicubic | model side-by-side crops here "
                   "(preview_<frame>.png; default: none)")
    p.add_argument("--preview-every", type=int, default=30, metavar="N",
                   help="with --preview: one preview of frame 0, N, 2N, ... (default: 30)")
    p.add_argument("--json", metavar="FILE", help="write the run summary as JSON (default: not written)")
    p.add_argument("--device", default="auto", help=device_help("auto"))
    add_precision_arg(p, ("fp32", "fp16"), default="fp32", help="torch backend precision (default: fp32)")
    p.add_argument("--plugins", help="TensorRT plugin library (default: the one named in the engine's sidecar)")
    p.add_argument("--url", help="triton backend: the server's gRPC HOST:PORT[/MODEL] (frames go out as "
                   "--tile windows, default 64, so the server can batch them)")
    p.add_argument("--threads", type=int, help="CPU threads for torch/onnxruntime (default: the library's)")
    p.add_argument("--queue-size", type=int, default=4, help="items per queue between stages (default: 4)")
    p.add_argument("--codec", default="auto", help="video encoder; auto: h264_nvenc where it opens, else libx264 "
                   "(a codec that does not open falls back to auto, said in one line; default: auto)")
    p.add_argument("--preset", default=None, help="x264 preset (default: veryfast, real time on 2 cores; "
                   "--realtime adds tune=zerolatency)")
    p.add_argument("--crf", type=int, help="x264 quality (default 18; NVENC cq 23)")
    p.add_argument("--hwdec", default="auto", help="video decoder: auto (NVDEC h264_cuvid/hevc_cuvid where the "
                   "driver opens it, else threaded software), off, or a decoder name (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch backend: torch.compile the device step "
                   "(CUDA graphs for each frame size on CUDA); the first frames of each size wait for the compiler")
    p.add_argument("--synthetic", type=int, metavar="N", help="N random 16x16 frames instead of INPUT (soak test)")
    p.add_argument("--no-progress", action="store_true", help=PROGRESS_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--simulate-latency-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


def default_output(spec: str, scale: int) -> Optional[str]:
    """``out/<name>_x<scale>[.mp4|.png]`` under the current folder: never beside the input, so a run
    from a checkout does not write into the source tree (``out/`` is git-ignored)."""
    if spec.startswith(("camera:", "synthetic:", "gst:", "csi:", "rtsp://", "rtsps://")):
        return None
    path = Path(spec.rstrip("/"))
    out = Path("out")
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES + (".mpg", ".mpeg", ".flv", ".wmv"):
        return str(out / f"{path.stem}_x{scale}.mp4")
    if path.is_dir():
        return str(out / f"{path.resolve().name}_x{scale}")
    if path.is_file():
        suffix = ".png" if path.suffix.lower() in IMAGE_SUFFIXES else ".mp4"
        return str(out / f"{path.stem}_x{scale}{suffix}")
    # a glob or printf pattern: a folder named after the pattern's fixed prefix
    import re
    name = re.split(r"[%*?\[]", path.name)[0].rstrip("_-. ") or "frames"
    return str(out / f"{name}_x{scale}")


class _Progress:
    """tqdm bar updated from the pipeline's run loop: fps, per-stage mean latency, queue depths."""

    def __init__(self, total: Optional[int], enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, pipe: Pipeline) -> None:
        if self.bar is None:
            return
        self.bar.update(pipe.frames_out - self.bar.n)
        lat = "/".join(f"{pipe.latency[s].mean * 1e3:.1f}" if pipe.latency[s].count else "-" for s in STAGES)
        depths = "/".join(str(v) for v in pipe.depths().values())
        post = {"lat_ms(dec/pre/inf/post/enc)": lat, "q": depths}
        if pipe.dropped:
            post["drop"] = pipe.dropped
        self.bar.set_postfix(post, refresh=False)

    def close(self, pipe: Pipeline) -> None:
        if self.bar is not None:
            self(pipe)
            self.bar.close()


def print_summary(s: dict, stream=None) -> None:
    stream = stream or sys.stderr  # looked up per call: a redirected stderr gets the summary too
    lat = s["latency_ms"]
    parts = ", ".join(f"{k} {lat[k]['mean']:.1f}/{lat[k]['p50']:.1f}/{lat[k]['p99']:.1f}"
                      for k in STAGES + ("e2e",) if lat[k]["count"])
    if lat.get("capture", {}).get("count"):  # live GStreamer sources: capture time -> encoded
        parts += f", capture->encoded {lat['capture']['p50']:.1f}/{lat['capture']['p99']:.1f} (p50/p99)"
    print(f"{s['frames_out']}/{s['frames_in']} frames out/in, {s['dropped']} dropped, {s['corrupt']} corrupt, "
          f"{s['fps']:.2f} fps, {s['backend']} {s['precision']} on {s['device']}; "
          f"latency ms mean/p50/p99: {parts}; RSS {s['rss_mb']['start']:.0f} -> {s['rss_mb']['end']:.0f} MiB",
          file=stream)
    conv = s.get("frames_converted") or {}
    video = [f"decoder {s['decoder']}" if s.get("decoder") else "", f"encoder {s['encoder']}" if s.get("encoder") else "",
             f"colour {s['colour']}" if s.get("colour") else "",
             f"frames as {' and '.join(s['layouts'])}" if s.get("layouts") else "",
             (f"{conv['count']} frame(s) converted to yuv420p by swscale (from {', '.join(conv['from'])})"
              if conv.get("count") else "")]
    if any(video):
        print("; ".join(v for v in video if v), file=stream)


def _is_stream(spec: str) -> bool:
    """A video file, a camera, a GStreamer or RTSP source, or synthetic frames: not still images."""
    return (spec.startswith(("synthetic:", *LIVE_PREFIXES))
            or Path(spec).suffix.lower() in VIDEO_SUFFIXES)


def _run(argv: Optional[list[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGXFSZ") and _main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past a file-size limit: an error line, not a silent kill
    spec = f"synthetic:{args.synthetic}" if args.synthetic else args.input
    if not spec:
        parser.error("give INPUT (or --synthetic N)")
    if args.batch < 1 or (args.tile is not None and args.tile < 1) or args.preview_every < 1:
        parser.error("--batch, --tile and --preview-every must be positive")
    model = args.model
    with contextlib.ExitStack() as claims:  # the output's lock, held until the output is in place
        if args.output is not None:
            claims.enter_context(claim_output(args.output))
        return _work(args, spec, model, claims)


def _work(args, spec: str, model: Optional[str], claims: contextlib.ExitStack) -> int:
    if model is None and args.backend in (None, "torch", "onnxruntime") and _is_stream(spec):
        from lcoan.pretrained import default_pretrained
        model = default_pretrained(args.scale or 2, video=True).name
    # Setup errors (BackendUnavailable, SourceError, SinkError: LcoanErrors) are one line, status 2.
    backend = load_backend(args.backend, model, scale=args.scale, precision=args.precision,
                           device=None if args.device == "auto" else args.device, threads=args.threads, plugins=args.plugins,
                           url=args.url, tile=args.tile, overlap=args.overlap, compile=args.compile)
    if args.scale and backend.scale != args.scale:
        raise BackendUnavailable(f"--scale {args.scale} but the model upscales x{backend.scale}")
    if args.simulate_latency_ms > 0:
        backend = SlowedBackend(backend, args.simulate_latency_ms / 1e3)
    source = open_source(spec, queue_size=args.queue_size, hwdec=args.hwdec)
    note = getattr(source, "decoder_note", "") or ""
    if args.hwdec not in ("auto", "off", "none", "cpu") and args.hwdec not in note.split(" (")[0]:
        print(f"warning: --hwdec {args.hwdec}: {note.split(' (', 1)[-1].rstrip(')')}; decoding in software",
              file=sys.stderr)
    colour_note = _check_colour(source, backend, model or "the graph")
    if source.fps is None:
        from fractions import Fraction
        source.fps = Fraction(args.fps).limit_denominator(1001)
        source.time_base = 1 / source.fps
    output = args.output
    if output is None:  # named after the model's scale: claimed once the model says it, before decoding
        output = default_output(spec, backend.scale)
        claims.enter_context(claim_output(output))
    _refuse_side_outputs(args, source)
    sink = open_sink(output, source, codec=args.codec, crf=args.crf, scale=backend.scale, preset=args.preset,
                     realtime=args.realtime)
    chosen = getattr(sink, "codec", None)
    if args.codec not in (None, "auto") and chosen and chosen != args.codec:
        print(f"warning: {sink.codec_note.split(';')[0]}; encoding with {chosen}", file=sys.stderr)

    # A backend that cuts its own windows (triton: sent concurrently) must not get tiles of tiles.
    tile = None if getattr(backend, "tiles_itself", False) else args.tile
    config = PipelineConfig(batch=args.batch, tile=tile, overlap=args.overlap, realtime=args.realtime,
                            fps=args.fps, queue_size=args.queue_size, preview_dir=args.preview,
                            preview_every=args.preview_every if args.preview else 0)
    pipe = Pipeline(source, backend, sink, config)
    progress = _Progress(source.total, enabled=not (args.quiet or args.no_progress))

    def on_sigint(signum, frame):
        again = pipe.interrupted
        pipe.stop()
        print("\ninterrupted: " + ("discarding frames in flight, closing the output" if again else
              "finishing frames in flight and closing the output (Ctrl-C again to discard them)"),
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    try:
        summary = pipe.run(on_tick=progress)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        progress.close(pipe)
        backend.close()
    summary.update({"input": spec, "output": output, "model": model or "bundled weights", "colour": colour_note})
    return _finish(args, pipe, summary, output, source.total)


def _finish(args, pipe: Pipeline, summary: dict, output: Optional[str], total: Optional[int]) -> int:
    """Warnings, the summary, what was written (only what exists at its final path), the status."""
    problems = summary.get("problems", [])
    for line in problems[:50]:  # printed with --quiet too: they are errors, not progress
        print(f"warning: {line}", file=sys.stderr)
    if len(problems) > 50:
        print(f"warning: ... and {len(problems) - 50} more (all in --json)", file=sys.stderr)
    if not args.quiet:
        print_summary(summary)
    status, wrote = EXIT_OK, []
    if summary["error"] is None and _is_local(output) and Path(output).exists():
        n, cut = summary["frames_out"], summary["interrupted"]
        of = f" of {total or summary['frames_in']}" if cut and (total or summary["frames_in"]) != n else ""
        wrote.append(f"wrote {n}{of} frame(s) to {output}" + (": interrupted" if cut else ""))
    if args.preview and Path(args.preview).is_dir():
        wrote.append(f"wrote previews to {args.preview}")
    if args.json:
        from lcoan.safeio import OutputError, atomic_write
        try:
            atomic_write(args.json, json.dumps(summary, indent=2))
            wrote.append(f"wrote {args.json}")
        except OutputError as exc:
            status = report(one_line(exc), EXIT_FAILED)
    if not args.quiet and wrote:
        print("; ".join(wrote), file=sys.stderr)
    if pipe.error is not None:
        from lcoan.safeio import OutputError
        from .sinks import SinkError
        if isinstance(pipe.error, (OutputError, SinkError)):  # a full disk, an unwritable file: the exit table's
            return report(one_line(pipe.error), pipe.error.exit_code)
        if isinstance(pipe.error, LcoanError):  # a source failing mid-stream: the run failed
            return report(one_line(pipe.error), EXIT_FAILED)
        return report(summary["error"], EXIT_FAILED)
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    if problems or summary.get("nonfinite"):
        return report(f"{len(problems)} problem(s) with the input or output (listed above); "
                      f"{summary['frames_out']} good frame(s) written to {output}", EXIT_DAMAGED)
    return status


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m app`` (and the ``lcoan-app`` script): returns the exit status; setup errors are
    one line, status 2 (:func:`lcoan.errors.exit_status`)."""
    return exit_status(_run, argv)


def _check_colour(source, backend, what: str) -> Optional[str]:
    """How the stream's colour meets the backend's: one line. A tagged stream whose matrix or range
    differs from an I420 graph's is refused (colours would shift); an untagged one takes the graph's."""
    colour = getattr(source, "colour", None)
    if colour is None:
        return None
    graph = getattr(backend, "graph_colour", None)
    from .frames import Colour, colour_check
    problem = colour_check(colour, graph, f"{what}'s i420 graph")
    if problem:
        raise BackendUnavailable(f"{getattr(source, 'path', 'input')}: {problem}")
    if graph is not None and not colour.tagged:
        source.colour = Colour(graph[0], graph[1])
        return f"untagged stream, converted as the i420 graph's {graph[0]} {graph[1]}"
    return colour.describe()


def _refuse_side_outputs(args, source) -> None:
    """--json and --preview never land on an input either."""
    from lcoan.safeio import OutputError, refuse_overwrite
    inputs = list(getattr(source, "inputs", []) or [])
    try:
        if args.json:
            refuse_overwrite(args.json, inputs, what="--json file")
        if args.preview:
            refuse_overwrite(args.preview, inputs, what="--preview folder")
    except OutputError as exc:
        raise SinkError(str(exc)) from None


def _is_local(output: Optional[str]) -> bool:
    """A file or folder this process writes (not null, not a GStreamer or network sink)."""
    return bool(output) and output != "null" and not output.startswith(("gst:", "udp://", "rtsp://", "rtsps://"))


@contextlib.contextmanager
def claim_output(output: Optional[str]):
    """Before the model runs: the output can be written (:func:`lcoan.safeio.check_writable`, which
    also removes the temporaries a killed run of it left: only its own, only those no live run
    holds), and no other run is writing it (:func:`lcoan.safeio.exclusive_output`, held meanwhile).
    A folder of images is probed with a file in it (the images' own temporaries: :class:`ImageSink`)."""
    if not _is_local(output):
        yield None
        return
    from lcoan.safeio import check_writable, exclusive_output
    path = Path(output)
    is_folder = path.is_dir() or path.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES
    check_writable(path / ".probe" if is_folder else path, what="output folder" if is_folder else "output")
    with exclusive_output(path) as lock:
        yield lock


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    run_cli(_run)
