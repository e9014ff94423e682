"""Write a Triton Inference Server model repository: TensorRT plan + production config, ONNX Runtime
CPU config (Python backend), plugin library for --sort plugin engines, README with the commands.

    python -m export.to_triton -o DIR [--weights W | --onnx F] [--fp32 | --fp16 | --int8 --calib DIR]
                               [--max-batch 8] [--min-hw 16x16 --opt-hw 96x96 --max-hw 256x256]
                               [--instances 1] [--cpu-instances 1] [--cpu-threads 0] [--queue-delay-us 2000]
                               [--sort onnx|plugin --plugins liblcoan_plugins.so [--serve-plugins F]] [--force]
                               [--io float|rgb8|i420 [--colorspace bt601|bt709] [--range limited|full]]

A thin command over :func:`serve.repository.write_repository` (see there for the layout). ``--io``:
the model takes and returns uint8 frames (see ``export.to_onnx``); both configs' data types and
dims follow the graph's I/O. ``--fp32``/``--fp16``/``--int8`` are the shorthands of
``--precision fp32|fp16|int8`` (default fp16).
"""
from __future__ import annotations

import sys

from engine.build import PRECISIONS
from export.errors import ExportError, run_cli
from lcoan.errors import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    from lcoan.cli import WEIGHTS_HELP, add_output_arg, add_precision_arg
    from serve import repository  # lazily: `--help` should not wait for the serving stack

    p = ArgumentParser(prog="python -m export.to_triton", description=__doc__.split("\n\n")[0])
    add_output_arg(p, "model repository folder to write", required=True, metavar="DIR")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="NAME|FILE", help=WEIGHTS_HELP)
    src.add_argument("--onnx", help="FP32 counting-sort ONNX graph (the CPU config serves it too)")
    add_precision_arg(p, PRECISIONS, default="fp16", help="precision of the plan (default: %(default)s)")
    p.add_argument("--calib", help="folder of LR calibration images for --int8")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=None)
    p.add_argument("--max-batch", type=int, default=repository.DEFAULT_MAX_BATCH,
                   help="max_batch_size and the engine profile's max batch (default %(default)s)")
    p.add_argument("--min-hw", default="x".join(map(str, repository.DEFAULT_MIN_HW)), help="smallest LR tile HxW")
    p.add_argument("--opt-hw", default="x".join(map(str, repository.DEFAULT_OPT_HW)),
                   help="LR tile HxW the engine is tuned for (the clients' tile size)")
    p.add_argument("--max-hw", default="x".join(map(str, repository.DEFAULT_MAX_HW)), help="largest LR tile HxW")
    p.add_argument("--instances", type=int, default=1, help="GPU model instances (production config)")
    p.add_argument("--cpu-instances", type=int, default=1, help="model instances of the CPU config")
    p.add_argument("--cpu-threads", type=int, default=0, help="ONNX Runtime threads per CPU instance (0: all)")
    p.add_argument("--queue-delay-us", type=int, default=repository.DEFAULT_QUEUE_DELAY_US,
                   help="dynamic batcher's max queue delay")
    p.add_argument("--sort", choices=("onnx", "plugin"), default="onnx")
    p.add_argument("--plugins", help="plugin library the builder loads (liblcoan_plugins_trt<major>.so) for "
                   "--sort plugin")
    p.add_argument("--serve-plugins", help=f"self-registering library copied for Triton (default: "
                   f"{repository.STATIC_PLUGIN_LIB} beside --plugins)")
    p.add_argument("--opt-level", type=int, default=None, help="builder optimization level (0-5)")
    p.add_argument("--work", help="keep the graphs the engine is built from here (default: a temporary folder)")
    p.add_argument("--force", action="store_true", help="replace an existing -o/--out folder")
    from lcoan.graph_io import COLORSPACES, IO_MODES, RANGES
    p.add_argument("--io", choices=IO_MODES, default=None,
                   help="model I/O when exporting from weights: float32 RGB (float), uint8 RGB NHWC (rgb8) or uint8 "
                        "I420 planes (i420) (default: float; --onnx: the graph's)")
    p.add_argument("--colorspace", choices=COLORSPACES, default=None, help="i420 colour matrix (default: bt709)")
    p.add_argument("--range", choices=RANGES, default=None, help="i420 code range (default: limited)")
    args = p.parse_args(argv)
    io = None
    if args.io or args.colorspace or args.range:
        from export.to_onnx import io_spec
        io = io_spec(args.io or "float", args.colorspace, args.range)

    precision = args.precision or "fp16"
    if args.calib and precision != "int8":
        raise ExportError("--calib is for --int8 builds")
    if args.plugins:
        from engine.trt import check_plugin_library, import_trt, reexec_for_rtx_plugins
        check_plugin_library(import_trt(), args.plugins)  # before any work, and before a restart
        if argv is None:  # a command line, not a library call: safe to restart
            reexec_for_rtx_plugins()
    repo = repository.write_repository(
        args.output, weights=args.weights, onnx=args.onnx, scale=args.scale, precision=precision, sort=args.sort,
        plugins=args.plugins, serve_plugins=args.serve_plugins, max_batch=args.max_batch, min_hw=args.min_hw,
        opt_hw=args.opt_hw, max_hw=args.max_hw, instances=args.instances, cpu_instances=args.cpu_instances,
        cpu_threads=args.cpu_threads, queue_delay_us=args.queue_delay_us, calib=args.calib,
        opt_level=args.opt_level, work=args.work, force=args.force, io=io)
    print(f"wrote {repo.root}: {repo.plan.relative_to(repo.root)} ({repo.precision}, {repo.trt_label}, "
          f"max batch {repo.max_batch}), {repo.production_config.relative_to(repo.root)}, "
          f"{repo.cpu_config.relative_to(repo.root)}"
          + (f", {repo.plugin.relative_to(repo.root)}" if repo.plugin else ""))
    if repo.trt_label.startswith("tensorrt_rtx"):
        print("note: the plan was built by TensorRT-RTX; Triton's TensorRT backend needs a plan built by the "
              "container's TensorRT (see README.md in the repository)", file=sys.stderr)
    return 0


def cli() -> None:
    """The console entry point (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    run_cli(main)
