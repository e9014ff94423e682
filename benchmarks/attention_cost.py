"""What LCoA's attention costs over the same preset without it, in PyTorch CPU and ORT CPU,
and where that time goes, stage by stage.

    python -m benchmarks.attention_cost [--cases edge:270x480 realtime:180x320] [--repeats 5]
                                        [--threads 1] [--ab-native] [--json out/benchmarks/attention_cost.json]

For each case (preset at an LR size) it times the ``lcoa`` model and the ``attention="none"``
model side by side in one process (runs interleaved, min of ``--repeats``), in PyTorch (NCHW,
and NHWC weights as the app and ``lcoan.upscale`` run them) and in the exported FP32 graph
(counting sort) on ONNX Runtime. "excess" is lcoa / none - 1; the goal
is at most 25%. FLOP share is the attention's share of the FLOPs (benchmarks.flops), so
excess / FLOP share says how many times its FLOP cost the attention really costs.
``--ab-native`` adds PyTorch rows of the same ``lcoa`` model on PyTorch ops only (the native CPU
kernels of ``lcoan.model.native`` off), timed in the same interleaved loop.

The stage tables come from torch.profiler and ORT's node profiler (self time per op, grouped
into the paper's stages). Weights are random: time does not depend on them.

Run as a script, it restarts itself once with glibc told to keep and reuse freed memory
(``RETAIN_FREED_MEMORY``). Otherwise every fresh CPU tensor of tens of MB comes from ``mmap``
and page-faults on first touch, and how much of that each model pays depends on what the
process ran before: the PyTorch rows would measure the allocator as much as the attention.
``--system-allocator`` measures without the restart. ORT has its own memory arena either way.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .common import machine, print_table, write_json
from .flops import mflops_per_pixel

# PyTorch op -> stage; ops not listed are "elementwise and the rest"
TORCH_STAGES = {
    "aten::mkldnn_convolution": "convolutions", "aten::_slow_conv2d_forward": "convolutions",
    "aten::thnn_conv2d": "convolutions", "aten::addmm": "convolutions",  # addmm: CoA's 1x1 W(X)
    "aten::mm": "assignment (Eq. 6)", "aten::argmax": "assignment (Eq. 6)", "aten::max": "assignment (Eq. 6)",
    "aten::sort": "sort (Eq. 7)", "aten::scatter": "sort (Eq. 7)", "aten::cumsum": "sort (Eq. 7)",
    "aten::index_select": "gathers and copies", "aten::gather": "gathers and copies",
    "aten::cat": "gathers and copies", "aten::copy_": "gathers and copies",
    "aten::clone": "gathers and copies",
    "aten::bmm": "window GEMMs (Eq. 8, 12)",
    "lcoan::window_apply": "window GEMMs (Eq. 8, 12)",  # lcoan.model.native: gather of keys + GEMM
    "lcoan::gather_add": "gathers and copies",          # lcoan.model.native: inverse gather + residual add
    "aten::amax": "window GEMMs (Eq. 8, 12)",  # lsp._pull_into_cache: the GEMMs' weights streamed in
    "aten::_softmax": "softmax (Eq. 9)",
    # not clamp_min: the convolutions' ReLU runs as clamp_min too, and the keys' clamp is tiny
    "aten::linalg_vector_norm": "key normalisation", "aten::div": "key normalisation",
}
ORT_STAGES = {
    "Conv": "convolutions", "ArgMax": "assignment (Eq. 6)",
    "CumSum": "sort (Eq. 7)", "ScatterElements": "sort (Eq. 7)", "Equal": "sort (Eq. 7)",
    "ReduceSum": "sort (Eq. 7)",
    "Gather": "gathers and copies", "GatherElements": "gathers and copies", "Concat": "gathers and copies",
    "Slice": "gathers and copies", "Transpose": "gathers and copies", "Expand": "gathers and copies",
    "Softmax": "softmax (Eq. 9)",
    "ReduceL2": "key normalisation", "Div": "key normalisation", "Clip": "key normalisation",
    "Max": "key normalisation",
}
OTHER = "elementwise and the rest"
# glibc: serve large tensors from the heap instead of fresh mmaps, and never give it back
RETAIN_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def allocator() -> str:
    retained = all(os.environ.get(k) == v for k, v in RETAIN_FREED_MEMORY.items())
    return "glibc, freed memory retained" if retained and _glibc() else "system default"


def _glibc() -> bool:
    import platform
    return platform.libc_ver()[0] == "glibc"


def _restart_retaining_freed_memory() -> None:
    if "--system-allocator" in sys.argv[1:] or allocator() != "system default" or not _glibc():
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.attention_cost", *sys.argv[1:]],
              {**os.environ, **RETAIN_FREED_MEMORY})


def _case(text: str) -> tuple[str, int, int]:
    preset, size = text.split(":")
    h, w = size.lower().split("x")
    return preset, int(h), int(w)


def _interleaved_min(fns, repeats: int) -> list[float]:
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return [b * 1e3 for b in best]


def _row(case: str, runtime: str, lcoa_ms: float, none_ms: float, flop_share: float) -> dict:
    excess = lcoa_ms / none_ms - 1
    return {"case": case, "runtime": runtime, "lcoa_ms": lcoa_ms, "none_ms": none_ms, "excess": excess,
            "flop_share": flop_share, "cost_per_flop": excess / flop_share}


def _torch_ops_only(fn):
    """fn, run with the native attention kernels off (``LCOAN_NATIVE=0``): the A/B rows."""
    def run():
        old = os.environ.get("LCOAN_NATIVE")
        os.environ["LCOAN_NATIVE"] = "0"
        try:
            return fn()
        finally:
            if old is None:
                del os.environ["LCOAN_NATIVE"]
            else:
                os.environ["LCOAN_NATIVE"] = old
    return run


def torch_stages(model, x) -> dict[str, float]:
    with torch.no_grad(), torch.profiler.profile() as prof:
        model(x)
    out: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        out[TORCH_STAGES.get(event.key, OTHER)] += event.self_cpu_time_total / 1e3
    return dict(out)


def ort_stages(proto, x, threads: int) -> dict[str, float]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(3):  # the first two runs grow ORT's memory arena (up to 3x slower nodes)
            sess.run(None, {"lr": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    last_run = [e for e in events if e.get("name") == "model_run"][-1]
    nodes = {n.name: n for n in proto.graph.node}
    out: dict[str, float] = defaultdict(float)
    for event in events:
        if (event.get("cat") != "Node" or not event["name"].endswith("_kernel_time")
                or event["ts"] < last_run["ts"]):
            continue
        op = event["args"].get("op_name", "")
        name = event["name"][: -len("_kernel_time")]
        stage = ORT_STAGES.get(op, OTHER)
        if op == "MatMul":
            stage = "assignment (Eq. 6)" if "/kmeans/" in name else "window GEMMs (Eq. 8, 12)"
        elif name in nodes and "sort" in name.lower() and stage == OTHER:
            stage = "sort (Eq. 7)"
        out[stage] += event["dur"] / 1e3
    return dict(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["edge:270x480", "realtime:180x320"],
                        help="PRESET:HxW LR sizes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per model, min taken (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--no-ort", action="store_true", help="PyTorch only")
    parser.add_argument("--ab-native", action="store_true",
                        help="also time lcoa on PyTorch ops only (LCOAN_NATIVE=0), interleaved with the rest")
    parser.add_argument("--system-allocator", action="store_true",
                        help="do not restart with glibc retaining freed memory (see the module docstring)")
    parser.add_argument("--json", default="out/benchmarks/attention_cost.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lcoan import build_model

    rows, stage_rows = [], []
    for text in args.cases:
        preset, h, w = _case(text)
        torch.manual_seed(0)
        lcoa, none = (build_model(preset, scale=2, attention=a).eval() for a in ("lcoa", "none"))
        x = torch.rand(1, 3, h, w)
        f_lcoa, f_none = mflops_per_pixel(lcoa), mflops_per_pixel(none)
        share = f_lcoa / f_none - 1
        # NCHW, then NHWC weights as the app's torch backend and lcoan.upscale run them
        nhwc = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (lcoa, none)]
        for runtime, (m_lcoa, m_none) in (("PyTorch", (lcoa, none)), ("PyTorch NHWC", nhwc)):
            fns = [lambda m=m_lcoa: m(x), lambda m=m_none: m(x)]
            if args.ab_native:
                fns.append(_torch_ops_only(lambda m=m_lcoa: m(x)))
            with torch.no_grad():
                times = _interleaved_min(fns, args.repeats)
            rows.append(_row(text, runtime, times[0], times[1], share))
            if args.ab_native:
                rows.append(_row(text, f"{runtime}, PyTorch ops only", times[2], times[1], share))
        stages = {"case": text, "runtime": "PyTorch", **torch_stages(lcoa, x)}
        stage_rows.append(stages)
        if not args.no_ort:
            from export import ort_ops
            from export.to_onnx import build_onnx
            xs = x.numpy()
            graphs = [build_onnx(m, sort="onnx") for m in (lcoa, none)]
            sessions = [ort_ops.session(g, threads=args.threads, spin=False) for g in graphs]
            o_lcoa, o_none = _interleaved_min([lambda s=s: s.run(None, {"lr": xs}) for s in sessions], args.repeats)
            rows.append(_row(text, "ORT", o_lcoa, o_none, share))
            stage_rows.append({"case": text, "runtime": "ORT", **ort_stages(graphs[0], xs, args.threads)})
        print(f"{text}: done", file=sys.stderr)

    print(f"\n{machine()}; x2, random weights, {args.threads} thread(s), min of {args.repeats} interleaved runs; "
          f"allocator: {allocator()}\n")
    print_table(rows, [("case", "preset:LR"), ("runtime", "runtime"), ("lcoa_ms", "lcoa ms"),
                       ("none_ms", "none ms"), ("excess", "excess (goal <= 0.25)"),
                       ("flop_share", "attention FLOP share"), ("cost_per_flop", "excess / FLOP share")])
    stages = sorted({k for r in stage_rows for k in r if k not in ("case", "runtime")})
    print("\nself time per stage of the lcoa model, ms (one profiled run)\n")
    print_table(stage_rows, [("case", "preset:LR"), ("runtime", "runtime")] + [(s, s) for s in stages])
    write_json(args.json, {"machine": machine(), "threads": args.threads, "repeats": args.repeats,
                           "allocator": allocator(),
                           "rows": rows, "stages": stage_rows})
    return 0


if __name__ == "__main__":
    _restart_retaining_freed_memory()
    sys.exit(main())
