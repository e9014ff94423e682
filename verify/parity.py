"""Parity reports: the same images through a reference and a candidate runner.

    python -m export.parity [--weights W] --onnx F [--images DIR] [--json out.json]
                            [--polygraphy-dir D] [--scale S]

Per image: the drift of the candidate from the reference (PSNR of candidate vs reference on
outputs clipped to [0, 1], peak 1, and the max absolute error) and the Y-PSNR of each against
the HR image when one is known (BT.601 Y, 8-bit quantised, ``shave = scale``). Exit status 1
when an image misses the tolerances. The rule is Polygraphy's default comparison, so that the
``polygraphy run ... --atol A --rtol R`` command printed with ``--polygraphy-dir`` passes exactly
when this report does. FP32 graphs, elementwise: an output element fails when
``|candidate - reference| > atol`` *and* ``|candidate - reference| / |reference| > rtol`` (NaN
always fails), atol = rtol = 1e-3 (a quarter of an 8-bit grey level); an image passes when no
element fails. FP16 graphs: 99.9% of the values within 1e-2 (``THRESHOLDS`` says why).

Integer-I/O graphs (``export.to_onnx --io rgb8|i420``) are compared in their own 8-bit levels,
against the float model between the same conversions (``export.integer_io.WithFrames``: for
rgb8 the float model on the 8-bit input, clamped and rounded; for i420 the float model between
``lcoan.color``'s YCbCr -> RGB and RGB -> YCbCr). The bound, for every output plane of every
image: at least 99.9% of the values within 1 level (FP32 and FP16 graphs; INT8: 13 levels), which
is Polygraphy's ``--check-error-stat quantile --error-quantile 0.999 --atol 1``. i420 images of
odd height or width are cropped by one row or column (4:2:0 needs even sizes); the report says so.

The API is runner-based, so other back ends plug in without changing the report:

    report = compare(torch_runner(model), ort_runner("lcoan.onnx"), samples, scale=2)

A runner maps a float32 ``[N, 3, h, w]`` array to the float32 SR array; for an integer graph
(``io``), it maps the graph's input dict to the list of its outputs.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from export.errors import ExportError, run_cli
from export.samples import Sample, benchmark_samples, check_input, load_samples
from lcoan.graph_io import INPUT_NAME, OUTPUT_NAME, GraphIO, load_onnx, read_io, read_metadata

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    """Polygraphy's ``simple`` rule with ``--atol``/``--rtol``, elementwise or on a quantile.

    One rule for this report and for the printed ``polygraphy run`` command. Elementwise
    (``quantile`` None, Polygraphy's default): an element fails when its absolute difference
    exceeds ``atol`` and its difference relative to the reference exceeds ``rtol`` (Polygraphy
    divides by the second run, the loaded reference outputs; zeros get its 2.2e-16 epsilon).
    With ``quantile`` q (``--check-error-stat quantile --error-quantile q``): an output passes when
    the q-quantile of the absolute difference is within ``atol`` or that of the relative
    difference within ``rtol``. NaN fails either way.
    """
    atol: float
    rtol: float
    quantile: float | None = None

    def _diffs(self, candidate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cand, ref = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
        diff = np.abs(cand - ref)
        denom = np.abs(np.where(ref == 0, np.finfo(np.float64).eps, ref))
        with np.errstate(invalid="ignore", divide="ignore"):
            return diff, diff / denom

    def mismatches(self, candidate: np.ndarray, reference: np.ndarray) -> int:
        """Elements off by more than both tolerances (the elementwise verdict's count)."""
        diff, rel = self._diffs(candidate, reference)
        bad = ((diff > self.atol) | np.isnan(diff)) & ((rel > self.rtol) | np.isnan(diff))
        return int(np.count_nonzero(bad))

    def passes(self, candidate: np.ndarray, reference: np.ndarray) -> bool:
        if self.quantile is None:
            return self.mismatches(candidate, reference) == 0
        diff, rel = self._diffs(candidate, reference)
        if diff.size == 0 or np.isnan(diff).any():
            return False
        return bool(np.quantile(diff, self.quantile) <= self.atol or np.quantile(rel, self.quantile) <= self.rtol)

    def polygraphy_args(self) -> list[str]:
        stat = [] if self.quantile is None else ["--check-error-stat", "quantile", "--error-quantile", f"{self.quantile:g}"]
        return stat + ["--atol", f"{self.atol:g}", "--rtol", f"{self.rtol:g}"]

    def compare_func_args(self) -> dict:
        """The same rule as keyword arguments of Polygraphy's ``CompareFunc.simple``."""
        stat = {} if self.quantile is None else {"check_error_stat": "quantile", "error_quantile": self.quantile}
        return {"atol": self.atol, "rtol": self.rtol, **stat}

    def describe(self) -> str:
        if self.quantile is None:
            return f"no element off by more than atol {self.atol:g} and rtol {self.rtol:g}, Polygraphy's rule"
        return (f"{100 * self.quantile:g}% of each output within atol {self.atol:g}"
                + (f" or rtol {self.rtol:g}" if self.rtol else "") + ", Polygraphy's quantile rule")


@dataclass(frozen=True)
class LevelThresholds:
    """The rule for integer outputs: the ``quantile`` of ``|candidate - reference|`` (in 8-bit
    levels, numpy's linear quantile, as Polygraphy computes it) is at most ``levels``, per output."""
    levels: float
    quantile: float

    def mismatches(self, candidate: np.ndarray, reference: np.ndarray) -> int:
        diff = np.abs(np.asarray(candidate, np.int32) - np.asarray(reference, np.int32))
        return int(np.count_nonzero(diff > self.levels))

    def passes(self, candidate: np.ndarray, reference: np.ndarray) -> bool:
        diff = np.abs(np.asarray(candidate, np.float64) - np.asarray(reference, np.float64))
        return diff.size > 0 and float(np.quantile(diff, self.quantile)) <= self.levels

    def polygraphy_args(self) -> list[str]:
        return ["--check-error-stat", "quantile", "--error-quantile", f"{self.quantile:g}",
                "--atol", f"{self.levels:g}", "--rtol", "0"]

    def describe(self) -> str:
        return f"{100 * self.quantile:g}% of each output within {self.levels:g} level(s)"


# FP32: ORT and PyTorch agree to ~3e-7 except where a near-tie flips one cluster id (Set14 zebra,
# 4.0e-4 with the bundled weights); 1e-3 is a quarter of an 8-bit grey level. FP16 on a quantile:
# the sort makes LCoA's output a discontinuous function of its features. Rounding only the input to
# FP16 (at most 2.4e-4) moves the FP32 model's output by up to 0.024 on Set14/ppt3 with sharp
# learned attention (its attention="none" twin: 0.0016), so some element of an FP16 graph always
# lands beyond any elementwise bound that its other 99.9% meet (docs/export.md, "FP16 parity").
# INT8 quality is judged by its Y-PSNR loss (python -m calib --report); this only catches breakage.
THRESHOLDS = {"fp32": Thresholds(1e-3, 1e-3), "fp16": Thresholds(1e-2, 0.0, quantile=0.999),
              "int8": Thresholds(5e-2, 5e-2)}
# Integer graphs: FP32 and FP16 measured at most 1 level off (FP16 runs the conversions in FP32);
# INT8 gets the float rule's 5e-2 in levels (13).
LEVEL_THRESHOLDS = {"fp32": LevelThresholds(1, 0.999), "fp16": LevelThresholds(1, 0.999),
                    "int8": LevelThresholds(13, 0.999)}


@dataclass
class ImageResult:
    name: str
    lr_shape: list[int]
    drift_db: float
    max_abs: float
    reference_psnr_y: float | None
    candidate_psnr_y: float | None
    passed: bool
    max_levels: int | None = None        # integer graphs: the largest difference, in 8-bit levels
    within: float | None = None          # integer graphs: the smallest fraction of an output's values in bound
    note: str | None = None              # e.g. "cropped to even 124x90 for i420"


@dataclass
class Report:
    reference: str
    candidate: str
    precision: str
    thresholds: Thresholds | LevelThresholds
    images: list[ImageResult] = field(default_factory=list)
    io: str = "float"

    @property
    def passed(self) -> bool:
        return bool(self.images) and all(r.passed for r in self.images)

    def summary(self) -> dict:
        drifts = [r.drift_db for r in self.images]
        def mean(values):
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None
        return {"images": len(self.images), "passed": self.passed,
                "min_drift_db": min(drifts) if drifts else None,
                "max_abs": max((r.max_abs for r in self.images), default=None),
                "mean_reference_psnr_y": mean([r.reference_psnr_y for r in self.images]),
                "mean_candidate_psnr_y": mean([r.candidate_psnr_y for r in self.images])}

    def to_dict(self) -> dict:
        return _json_safe({"reference": self.reference, "candidate": self.candidate, "io": self.io,
                           "precision": self.precision, "thresholds": asdict(self.thresholds),
                           "summary": self.summary(), "images": [asdict(r) for r in self.images]})

    def save_json(self, path: str | Path) -> Path:
        from lcoan.safeio import atomic_write
        return atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self) -> str:
        def fmt(v, spec=".2f"):
            return "-" if v is None else ("inf" if v == math.inf else format(v, spec))
        head = f"{'image':<18} {'LR HxW':>10} {'drift dB':>9} {'max abs':>9} " \
               f"{self.reference + ' Y':>14} {self.candidate + ' Y':>16}  ok"
        lines = [head, "-" * len(head)]
        for r in self.images:
            hw = f"{r.lr_shape[2]}x{r.lr_shape[3]}"
            lines.append(f"{r.name:<18} {hw:>10} {fmt(r.drift_db):>9} {r.max_abs:>9.2e} "
                         f"{fmt(r.reference_psnr_y):>14} {fmt(r.candidate_psnr_y):>16}  "
                         f"{'yes' if r.passed else 'NO'}")
            if r.within is not None:
                lines[-1] += f"  max {r.max_levels} level(s), {100 * r.within:.3f}% within"
            if r.note:
                lines[-1] += f"  ({r.note})"
        s = self.summary()
        t = self.thresholds
        rule = t.describe() + (", Polygraphy's quantile rule" if isinstance(t, LevelThresholds) else "")
        lines.append(f"{len(self.images)} images, {self.precision}{'' if self.io == 'float' else ' ' + self.io}, "
                     f"min drift {fmt(s['min_drift_db'])} dB, "
                     f"max abs {s['max_abs']:.2e}: {'PASS' if self.passed else 'FAIL'} ({rule})")
        return "\n".join(lines)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- metrics
def drift_psnr(candidate: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB, peak 1) of ``candidate`` against ``reference``, both clipped to [0, 1]."""
    a = np.clip(candidate.astype(np.float64), 0, 1)
    b = np.clip(reference.astype(np.float64), 0, 1)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def _psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    import torch

    from lcoan.metrics import psnr_y
    value = psnr_y(torch.from_numpy(np.ascontiguousarray(sr)), torch.from_numpy(np.ascontiguousarray(hr)), shave)
    return float(np.mean(np.asarray(value.cpu() if hasattr(value, "cpu") else value, dtype=np.float64)))


# --------------------------------------------------------------------------- runners
def torch_runner(model) -> Runner:
    """PyTorch eager (the model's own stable sort)."""
    import torch
    model = model.eval()

    def run(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(lr)).numpy()
    return run


def ort_runner(onnx_model, threads: int | None = None, io: GraphIO | None = None) -> Runner:
    """ONNX Runtime CPU; plugin-form graphs run with the CPU ``LCoAClusterSort``.

    With an integer ``io``, the runner takes the graph's input dict and returns its outputs."""
    from export import ort_ops
    sess = ort_ops.session(onnx_model, threads=threads)
    if io is not None and io.integer:
        return lambda feed: sess.run(list(io.outputs), feed)

    def run(lr: np.ndarray) -> np.ndarray:
        return sess.run([OUTPUT_NAME], {INPUT_NAME: lr})[0]
    return run


def torch_frames_runner(model, io: GraphIO):
    """PyTorch eager between the integer graph's conversions: input dict -> list of uint8 outputs."""
    import torch

    from export.integer_io import WithFrames
    net = WithFrames(model.eval(), io).eval()

    def run(feed: dict) -> list:
        with torch.inference_mode():
            out = net(*(torch.from_numpy(np.ascontiguousarray(feed[name])) for name in io.inputs))
        return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
    return run


# --------------------------------------------------------------------------- comparison
def compare(reference_fn: Runner, candidate_fn: Runner, samples: Iterable[Sample], *, scale: int,
            precision: str = "fp32", thresholds: Thresholds | None = None,
            reference_name: str = "pytorch", candidate_name: str = "onnxruntime",
            outputs: dict | None = None, progress: bool = False, io: GraphIO | None = None,
            inputs: dict | None = None) -> Report:
    """Run both runners on every sample; ``outputs`` (if given) collects the reference outputs.

    ``progress``: a tqdm bar on stderr, one step per image (both runners). ``io``: an integer
    graph's I/O; the runners then take its input dict (built from each sample, collected in
    ``inputs`` if given) and return its outputs, compared in levels (:class:`LevelThresholds`).
    """
    if io is not None and io.integer:
        return _compare_frames(reference_fn, candidate_fn, samples, io=io, scale=scale, precision=precision,
                               thresholds=thresholds, reference_name=reference_name,
                               candidate_name=candidate_name, inputs=inputs, outputs=outputs, progress=progress)
    if precision not in THRESHOLDS and thresholds is None:
        raise ExportError(f"unknown precision {precision!r}; pass thresholds")
    thresholds = thresholds or THRESHOLDS[precision]
    report = Report(reference_name, candidate_name, precision, thresholds)
    from tqdm import tqdm
    samples = list(samples)
    bar = tqdm(samples, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"{reference_name} vs {candidate_name}")
    for sample in bar:
        bar.set_postfix_str(sample.name, refresh=False)
        lr = check_input(sample.name, sample.lr)
        ref = np.asarray(reference_fn(lr), dtype=np.float32)
        cand = np.asarray(candidate_fn(lr), dtype=np.float32)
        if cand.shape != ref.shape:
            raise ExportError(f"{sample.name}: {candidate_name} output {cand.shape} != {reference_name} {ref.shape}")
        if outputs is not None:
            outputs[sample.name] = ref
        drift, max_abs = drift_psnr(cand, ref), float(np.max(np.abs(cand - ref)))
        ref_y = cand_y = None
        if sample.hr is not None and sample.hr.shape == ref.shape:
            ref_y, cand_y = _psnr_y(ref, sample.hr, scale), _psnr_y(cand, sample.hr, scale)
        report.images.append(ImageResult(sample.name, list(lr.shape), drift, max_abs, ref_y, cand_y,
                                         thresholds.passes(cand, ref)))
    return report


def _compare_frames(reference_fn, candidate_fn, samples, *, io: GraphIO, scale: int, precision: str,
                    thresholds, reference_name: str, candidate_name: str, inputs: dict | None,
                    outputs: dict | None, progress: bool) -> Report:
    from export.integer_io import even, frames_from_rgb, rgb_from_frames
    if precision not in LEVEL_THRESHOLDS and thresholds is None:
        raise ExportError(f"unknown precision {precision!r}; pass thresholds")
    thresholds = thresholds or LEVEL_THRESHOLDS[precision]
    report = Report(reference_name, candidate_name, precision, thresholds, io=io.describe())
    from tqdm import tqdm
    samples = list(samples)
    bar = tqdm(samples, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"{reference_name} vs {candidate_name}")
    for sample in bar:
        bar.set_postfix_str(sample.name, refresh=False)
        lr, note = check_input(sample.name, sample.lr), None
        if io.mode == "i420" and (lr.shape[2] % 2 or lr.shape[3] % 2):
            lr = even(lr)
            note = f"cropped to even {lr.shape[2]}x{lr.shape[3]} for 4:2:0"
        if min(lr.shape[2:]) < 2 and io.mode == "i420":
            raise ExportError(f"{sample.name}: {lr.shape[3]}x{lr.shape[2]} is too small for 4:2:0 (at least 2x2)")
        feed = frames_from_rgb(io, lr)
        ref = [np.asarray(a) for a in reference_fn(feed)]
        cand = [np.asarray(a) for a in candidate_fn(feed)]
        for name, a, b in zip(io.outputs, cand, ref):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ExportError(f"{sample.name}: {candidate_name} output {name} {a.shape} {a.dtype} != "
                                  f"{reference_name} {b.shape} {b.dtype}")
        if inputs is not None:
            inputs[sample.name] = feed
        if outputs is not None:
            outputs[sample.name] = dict(zip(io.outputs, ref))
        diffs = [np.abs(a.astype(np.int32) - b.astype(np.int32)) for a, b in zip(cand, ref)]
        max_levels = max(int(d.max()) for d in diffs)
        within = min(float(np.mean(d <= thresholds.levels)) for d in diffs)
        ref_rgb, cand_rgb = rgb_from_frames(io, ref), rgb_from_frames(io, cand)
        ref_y = cand_y = None
        hr = None if sample.hr is None else sample.hr[..., :ref_rgb.shape[2], :ref_rgb.shape[3]]
        if hr is not None and hr.shape == ref_rgb.shape:
            ref_y, cand_y = _psnr_y(ref_rgb, hr, scale), _psnr_y(cand_rgb, hr, scale)
        report.images.append(ImageResult(
            sample.name, list(lr.shape), drift_psnr(cand_rgb, ref_rgb), max_levels / 255.0, ref_y, cand_y,
            all(thresholds.passes(a, b) for a, b in zip(cand, ref)), max_levels, within, note))
    return report


def save_polygraphy(samples: Sequence[Sample], reference_outputs: dict, folder: str | Path,
                    runner_name: str = "pytorch", inputs: dict | None = None) -> tuple[Path, Path]:
    """Inputs and reference outputs in Polygraphy's JSON formats, for

        polygraphy run lcoan.onnx --onnxrt --load-inputs inputs.json \
            --load-outputs pytorch_outputs.json --atol 1e-3 --rtol 1e-3
    """
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inputs_path, outputs_path = folder / "inputs.json", folder / f"{runner_name}_outputs.json"
    feeds = [inputs[s.name] if inputs is not None else {INPUT_NAME: check_input(s.name, s.lr)} for s in samples]
    from lcoan.safeio import atomic_output
    with atomic_output(inputs_path) as tmp:   # Polygraphy writes in place; a failed run keeps the old file
        save_json(feeds, str(tmp), description="LCoAN LR inputs")

    def named(out):
        return out if isinstance(out, dict) else {OUTPUT_NAME: out}
    results = RunResults([(runner_name, [IterationResult(named(reference_outputs[s.name]),
                                                         runner_name=runner_name) for s in samples])])
    with atomic_output(outputs_path) as tmp:
        results.save(str(tmp))
    return inputs_path, outputs_path


def polygraphy_command(onnx_path: str | Path, inputs: Path, outputs: Path, precision: str = "fp32",
                       thresholds: Thresholds | None = None) -> list[str]:
    """The ``polygraphy run`` command that checks the same rule as :class:`Thresholds`."""
    thresholds = thresholds or THRESHOLDS.get(precision) or THRESHOLDS["fp32"]
    return ["polygraphy", "run", str(onnx_path), "--onnxrt", "--load-inputs", str(inputs),
            "--load-outputs", str(outputs), *thresholds.polygraphy_args()]


# --------------------------------------------------------------------------- engine vs ONNX Runtime
def compare_engine(engine: str | os.PathLike, onnx_path: str | os.PathLike, images=None, *,
                   plugins: str | os.PathLike | None = None,
                   scale: int | None = None, limit: int | None = None, precision: str | None = None):
    """Engine vs ONNX Runtime on the same images: ``(Report, polygraphy_ok)``.

    ``images``: a folder for ``export.samples.load_samples`` or a list of ``Sample``; default
    Set5 + Set14. The report is this module's (drift, Y-PSNR per image); Polygraphy's
    ``Comparator`` (:mod:`verify.engine_vs_ort`) checks the same outputs under the same rule.
    """
    from engine import cache
    from engine.runtime import engine_runner, require_runtime
    from export.precision import graph_precision

    from .engine_vs_ort import polygraphy_compare
    require_runtime()
    proto = load_onnx(onnx_path)
    scale = scale or read_metadata(proto, str(onnx_path)).scale or 2
    side = cache.read_sidecar(engine) or {}
    precision = precision or side.get("precision") or graph_precision(proto)
    if images is None:
        samples = benchmark_samples(scale, limit=limit)
    elif isinstance(images, (str, os.PathLike)):
        problems: list[str] = []
        samples = load_samples(images, scale, limit, problems=problems)
        for line in problems:  # named and skipped, as without --engine
            print(f"skipped: {line}", file=sys.stderr)
        if not samples:
            raise ExportError(f"{images}: none of the images could be read")
    else:
        samples = list(images)
    # compare() picks the precision's thresholds (one line for an unknown precision)
    report = compare(ort_runner(proto), engine_runner(engine, plugins), samples, scale=scale,
                     precision=precision, reference_name="onnxruntime", candidate_name="tensorrt")
    rule = report.thresholds
    ok = polygraphy_compare(engine, proto, samples, rule=rule, plugins=plugins)
    return report, ok


def _engine_main(engine: str, onnx_path: str, images: str | None = None, plugins: str | None = None,
                 limit: int | None = None, json_path: str | None = None) -> int:
    """``python -m export.parity --engine E --onnx F``: print the report; 0 when it passes."""
    report, poly_ok = compare_engine(engine, onnx_path, images, plugins=plugins, limit=limit)
    print(report.table())
    print(f"polygraphy Comparator (TrtRunner vs OnnxrtRunner): {'PASS' if poly_ok else 'FAIL'}")
    if json_path:
        print(f"wrote {report.save_json(json_path)}")
    return 0 if report.passed and poly_ok else 1


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from lcoan.cli import ArgumentParser
    parser = ArgumentParser(prog="python -m export.parity", description=__doc__.split("\n\n")[0])
    from lcoan.cli import WEIGHTS_HELP
    parser.add_argument("--weights", metavar="NAME|FILE", help=WEIGHTS_HELP)
    parser.add_argument("--onnx", required=True, help="exported graph (either sort form, fp32 or fp16)")
    parser.add_argument("--images", help="folder of LR images or .npy [N, 3, h, w] arrays "
                                         "(default: Set5 and Set14 LR_bicubic X<scale>)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=None,
                        help="expected scale (default: the graph's)")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--polygraphy-dir", help="write inputs and PyTorch outputs as Polygraphy JSON here")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per folder")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--engine", help="TensorRT engine to compare with ONNX Runtime on --onnx (needs a GPU)")
    parser.add_argument("--plugins", help="plugin library for --engine")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from lcoan.safeio import OutputError
    try:  # run_cli's one-line handler knows ExportError
        return _main(args)
    except OutputError as exc:
        raise ExportError(str(exc)) from None


def _bundled_weights_of(config: dict | None) -> str | None:
    """The weights-table name whose model config the graph records, so that a graph exported from
    any bundled weights is compared with those weights without --weights; None: the default."""
    if not config:
        return None
    from lcoan.checkpoint import read_checkpoint
    from lcoan.model import LCoANConfig
    from lcoan.pretrained import get_pretrained, list_pretrained

    def normalised(cfg: dict) -> dict:
        """The full config with defaults filled in and training-only fields (the reparameterised
        form, which every load collapses) as the loaded model has them, in JSON's types."""
        known = {k: v for k, v in cfg.items() if k in LCoANConfig.__dataclass_fields__}
        return json.loads(json.dumps(LCoANConfig(**{**known, "reparam": ""}).to_dict()))
    try:
        want = normalised(config)
    except (TypeError, ValueError):
        return None
    matches = [name for name in list_pretrained()
               if normalised(read_checkpoint(get_pretrained(name).path)[0]) == want]
    return matches[0] if len(matches) == 1 else None


def _main(args) -> int:
    from lcoan.safeio import check_writable, refuse_overwrite
    inputs = [args.onnx, args.weights, args.images, args.engine]
    if args.json:
        refuse_overwrite(args.json, inputs, what="--json report")
        check_writable(args.json, what="--json report")
    if args.polygraphy_dir:
        refuse_overwrite(args.polygraphy_dir, inputs, what="--polygraphy-dir")
    if args.engine:
        if read_io(args.onnx).integer:
            raise ExportError(f"{args.onnx}: --engine compares float graphs; check an integer-I/O graph "
                              "without --engine (ONNX Runtime against PyTorch)")
        return _engine_main(args.engine, args.onnx, args.images, args.plugins, args.limit, args.json)

    onnx_path = Path(args.onnx)
    proto = load_onnx(onnx_path)  # one line for a missing, empty, truncated or non-ONNX file
    from export.to_onnx import check_finite_graph
    check_finite_graph(proto, onnx_path)
    try:
        meta = read_metadata(proto, str(onnx_path))
        io = read_io(proto, str(onnx_path))
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    graph_scale = meta.scale
    if args.scale and graph_scale and args.scale != graph_scale:
        raise ExportError(f"{onnx_path}: graph is for x{graph_scale}, not x{args.scale}")
    scale = args.scale or graph_scale

    from export.to_onnx import load_weights
    weights = args.weights if args.weights is not None else _bundled_weights_of(meta.config)
    model = load_weights(weights, scale)
    if graph_scale and model.scale != graph_scale:
        raise ExportError(f"weights are for x{model.scale}, the graph {onnx_path} is for x{graph_scale}")
    ours = json.loads(json.dumps(model.config.to_dict()))  # tuples as the graph's JSON holds them
    if meta.config and ours != meta.config:
        key = next(k for k in sorted(set(meta.config) | set(ours)) if meta.config.get(k) != ours.get(k))
        raise ExportError(f"{onnx_path} was exported from another model than {weights or 'the bundled weights'} "
                          f"({key}: {meta.config.get(key)} in the graph, {ours.get(key)} in the weights); "
                          "pass --weights with the weights it was exported from")
    scale = model.scale
    problems: list[str] = []
    samples = (load_samples(args.images, scale, args.limit, problems=problems) if args.images
               else benchmark_samples(scale, limit=args.limit))
    for line in problems:  # named, skipped; the exit status reports them at the end
        print(f"skipped: {line}", file=sys.stderr)
    if not samples:
        raise ExportError(f"{args.images}: none of the images could be read")
    from export.precision import graph_precision
    precision = graph_precision(proto)
    outputs: dict = {}
    feeds: dict | None = {} if io.integer else None
    reference = torch_frames_runner(model, io) if io.integer else torch_runner(model)
    report = compare(reference, ort_runner(proto, threads=args.threads, io=io), samples,
                     scale=scale, precision=precision, outputs=outputs, progress=not args.no_progress,
                     io=io, inputs=feeds)
    print(report.table())
    written = []
    if args.json:
        written.append(str(report.save_json(args.json)))
    if args.polygraphy_dir:
        inputs, outs = save_polygraphy(samples, outputs, args.polygraphy_dir, inputs=feeds)
        written += [str(inputs), str(outs)]
        print("polygraphy check (same rule): " + " ".join(polygraphy_command(onnx_path, inputs, outs, precision,
                                                                             report.thresholds)))
    if problems:
        print(f"error: {len(problems)} image(s) could not be read (listed above)", file=sys.stderr)
    print(f"parity {'PASS' if report.passed else 'FAIL'}: {onnx_path} ({io.describe()} I/O) vs PyTorch on {len(report.images)} "
          f"image(s); " + (f"wrote {', '.join(written)}" if written else "wrote nothing (no --json)"))
    return 0 if report.passed and not problems else 1


def cli() -> None:
    """The console entry point (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    run_cli(main)
