"""Build a TensorRT engine for LCoAN: weights -> ONNX -> precision graph -> strongly typed
network -> serialized engine, with a JSON sidecar and an engine cache.

Orchestration: this command chains the stages (``export`` for the graph, ``calib`` for
``--int8 --calib``, ``engine`` for the build), so it lives above them; ``python -m export.to_trt``
is its alias.

    python -m export.to_trt [--onnx F | --weights W] [--fp32 | --fp16 | --int8 --calib DIR]
                            [--min 1x3x16x16 --opt 1x3x270x480 --max 1x3x540x960]
                            [-o F.engine] [--plugins liblcoan_plugins.so]
                            [--sort onnx|plugin] [--opt-level N] [--timing-cache F] [--force]
                            [--io float|rgb8|i420 [--colorspace bt601|bt709] [--range limited|full]]

``--fp32``/``--fp16``/``--int8`` are the shorthands of ``--precision fp32|fp16|int8`` (default fp16).
Precision lives in the graph (TensorRT 11 and TensorRT-RTX have no FP16/INT8 builder flags):
``--fp16`` builds the FP16 graph of ``export.precision`` (cluster assignment and softmax in
FP32), ``--int8`` a Q/DQ graph calibrated by ``python -m calib`` (give that graph as ``--onnx``,
or ``--calib DIR`` with LR images to calibrate here). The network is always ``STRONGLY_TYPED``.

Output names say what they hold, so the FP16 and INT8 builds never overwrite each other: from
the bundled weights ``lcoan_edge_x2_fp16.engine`` (``<weights stem>_<precision>.engine``), from
``--onnx lcoan_int8.onnx`` ``lcoan_int8.engine`` (``<graph stem>_<precision>``, a precision suffix
of the stem replaced), in the current folder; the graph it is built from is written beside it as
``<stem>_<precision>.onnx`` (e.g. ``lcoan_edge_x2_fp16.onnx``).

``--io rgb8|i420`` (from weights; a graph given as ``--onnx`` keeps its own I/O) builds an engine
that takes and returns uint8 frames (``lcoan.graph_io``); the profile is still given as LR
N x 3 x H x W, and becomes (N, H, W, 3) or the (N, H, W), (N, H/2, W/2) planes (even H and W).

Each engine gets a sidecar ``<engine>.json`` (see ``engine.cache``): an engine whose key
(ONNX sha256, TensorRT flavour+version, GPU or ``cpu-build``, precision, profile, plugin library) matches is reused; otherwise it is rebuilt and the change is named.
"""
from __future__ import annotations

from pathlib import Path

from engine import cache
from engine.build import DEFAULT_PROFILE, DEFAULT_WORKSPACE_MIB, build_engine, make_profile, parse_shape
from engine.graph_source import prepare_graph, strip_precision
from engine.trt import check_plugin_library, import_trt, reexec_for_rtx_plugins, trt_info
from export.errors import ExportError, run_cli


def default_engine_path(onnx_path: str | None, weights: str | None, precision: str,
                        scale: int | None = None, sort: str = "onnx", io=None) -> Path:
    """``<graph or weights stem>_<precision>.engine`` in the current folder (never one shared name)."""
    if onnx_path:
        stem = Path(onnx_path).stem
    elif weights:
        stem = Path(weights).stem
    else:
        import lcoan
        stem = Path(lcoan.default_weights(scale or 2)).stem  # lcoan_edge_x2
    if not onnx_path and sort == "plugin":
        stem += "_plugin"  # the plugin graph's engine is another file than the standard-op one
    if not onnx_path and io is not None:
        from export.to_onnx import io_tag
        stem += io_tag(io)  # so is each I/O mode's
    return Path(f"{strip_precision(stem)}_{precision}.engine")


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from lcoan.cli import ArgumentParser, add_output_arg, add_precision_arg
    parser = ArgumentParser(prog="python -m export.to_trt", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--onnx", help="ONNX graph: FP32 (converted to the chosen precision), or already "
                     "FP16 / Q/DQ INT8 (default: export the weights)")
    from lcoan.cli import WEIGHTS_HELP
    src.add_argument("--weights", metavar="NAME|FILE", help=WEIGHTS_HELP)
    add_precision_arg(parser, ("fp32", "fp16", "int8"), default="fp16",
                      help="precision of the graph the engine is built from (default: %(default)s)",
                      shorthand_help={"fp32": "FP32 graph",
                                      "fp16": "FP16 graph, cluster assignment and softmax in FP32",
                                      "int8": "Q/DQ INT8 graph: --onnx from `python -m calib`, or --calib DIR"})
    parser.add_argument("--calib", metavar="DIR", help="folder of LR calibration images for --int8 (default: none)")
    parser.add_argument("--calib-method", default="minmax", choices=("entropy", "percentile", "minmax"),
                        help="calibration method for --calib (default: %(default)s)")
    parser.add_argument("--calib-num", type=int, default=32, help="calibration tiles (default: %(default)s)")
    parser.add_argument("--calib-tile", default="64x64", metavar="HxW",
                        help="calibration tile in LR pixels (default: %(default)s)")
    for flag, value, what in (("--min", DEFAULT_PROFILE[0], "smallest"), ("--opt", DEFAULT_PROFILE[1], "tuned-for"),
                              ("--max", DEFAULT_PROFILE[2], "largest")):
        parser.add_argument(flag, default=value, metavar="NxCxHxW",
                            help=f"{what} LR input of the shape profile, batch x 3 x height x width "
                                 f"(default: %(default)s)")
    add_output_arg(parser, "engine file; its graph and .json sidecar go beside it (default: "
                           "<weights or --onnx stem>[_plugin]_<precision>.engine, e.g. lcoan_edge_x2_fp16.engine)",
                   metavar="F.engine")
    parser.add_argument("--plugins", metavar="LIB.so",
                        help="TensorRT plugin library for --sort plugin graphs (default: none)")
    parser.add_argument("--sort", choices=("onnx", "plugin"), default="onnx",
                        help="sort form when exporting from weights: standard ops or the LCoAClusterSort "
                             "plugin node (default: %(default)s)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=None,
                        help="expected scale; an error if the weights are for another (default: the weights')")
    parser.add_argument("--opt-level", type=int, default=None,
                        help="builder optimization level 0-5 (default: TensorRT's)")
    parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB",
                        help="workspace pool limit in MiB (default: %(default)s)")
    parser.add_argument("--timing-cache", metavar="F",
                        help="timing cache file (default: ~/.cache/lcoan/timing-<flavour>-<version>.cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache key matches")
    parser.add_argument("--verbose", action="store_true", help="print TensorRT's log")
    from lcoan.graph_io import COLORSPACES, IO_MODES, RANGES
    parser.add_argument("--io", choices=IO_MODES, default=None,
                        help="graph I/O when exporting from weights: float32 RGB (float), uint8 RGB NHWC (rgb8) "
                             "or uint8 I420 planes (i420); see export.to_onnx (default: float; --onnx: the graph's)")
    parser.add_argument("--colorspace", choices=COLORSPACES, default=None, help="i420 colour matrix (default: bt709)")
    parser.add_argument("--range", choices=RANGES, default=None, help="i420 code range (default: limited)")
    args = parser.parse_args(argv)
    if args.onnx and (args.io or args.colorspace or args.range):
        raise ExportError("--io, --colorspace and --range are for exporting from weights; a graph given as --onnx "
                          "keeps its own I/O (export it with python -m export.to_onnx --io ...)")
    from export.to_onnx import io_spec
    spec = io_spec(args.io or "float", args.colorspace, args.range)

    precision = args.precision or "fp16"
    profile = make_profile(args.min, args.opt, args.max)
    if args.plugins and not Path(args.plugins).is_file():
        raise ExportError(f"plugin library {args.plugins} not found; build it with `python -m plugins.build` "
                          "on a machine with the TensorRT headers (set TENSORRT_ROOT)")
    if args.calib and precision != "int8":
        raise ExportError("--calib is for --int8 builds")
    info = trt_info()  # fail early, before exporting, when TensorRT is missing
    if args.plugins:
        check_plugin_library(import_trt(), args.plugins)  # before any work, and before a restart
        if argv is None:  # a command line, not a library call: safe to restart
            reexec_for_rtx_plugins()
    out = Path(args.output) if args.output else default_engine_path(args.onnx, args.weights, precision,
                                                                    args.scale, args.sort, spec)
    from lcoan.safeio import check_writable, refuse_overwrite
    inputs = [p for p in (args.onnx, args.weights, args.calib, args.plugins, args.timing_cache) if p]
    refuse_overwrite(out, inputs, what="engine")
    check_writable(out, what="engine")  # before any export, calibration or build
    if spec.mode == "i420":
        from engine.build import io_profile
        io_profile(spec, profile)  # odd profile sizes: one line before the export
    tile = parse_shape(args.calib_tile, "--calib-tile")
    if len(tile) != 2:
        raise ExportError(f"--calib-tile {args.calib_tile!r}: expected HxW")
    source = prepare_graph(onnx_path=args.onnx, weights=args.weights, precision=precision, sort=args.sort,
                           out=out, calib=args.calib, calib_method=args.calib_method,
                           calib_num=args.calib_num, calib_tile=tile, scale=args.scale, io=spec)
    result = build_engine(source.path, out, precision=precision, profile=profile, plugins=args.plugins,
                          opt_level=args.opt_level, workspace_mib=args.workspace,
                          timing_cache=args.timing_cache, force=args.force, verbose=args.verbose,
                          extra={"sort": source.sort, "timings": source.timings})
    if not result.reused:
        side = result.sidecar
        t = side.get("timings", {})
        net = side.get("network", {})
        print(f"wrote {out} ({precision}, {info.label}, {result.key.device}, profile {profile.label()}, "
              f"{net.get('layers')} layers, build {t.get('build_s')} s, {side.get('engine_bytes')} bytes)")
    made = [str(out), str(cache.sidecar_path(out))]
    if source.path.resolve() != Path(args.onnx or "").resolve():
        made.insert(0, str(source.path))
    print(f"done ({'engine reused' if result.reused else 'engine built'}): {', '.join(made)}")
    return 0


def cli() -> None:
    """The console entry point (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    run_cli(main)
