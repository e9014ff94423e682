"""Frames stay uint8 planes from decoder to encoder: no swscale for yuv420p, colours kept, codecs
that open, and backends that take and return uint8."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from app.backends import BicubicBackend, TorchBackend  # noqa: E402
from app.cli import main  # noqa: E402
from app.frames import Colour, colour_check, from_float, to_float  # noqa: E402
from app.stream import Pipeline, PipelineConfig  # noqa: E402
from app.sinks import choose_encoder, codec_opens, open_sink  # noqa: E402
from app.sources import open_source  # noqa: E402


def _clip(path, pix_fmt="yuv420p", n=6, w=64, h=48, colorspace=None):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = {"preset": "ultrafast", "crf": "10"}
        if colorspace:
            s.codec_context.colorspace, s.codec_context.color_range = colorspace, 1
        for i in range(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.roll(base, i, 1), format="rgb24")))
        c.mux(s.encode(None))
    return str(path)


class Recording(BicubicBackend):
    """Bicubic that keeps the layout of every batch it is given."""

    def __init__(self):
        super().__init__(2)
        self.seen = []

    def run_u8(self, batch, fmt, colour=None, infer=None):
        self.seen.append((fmt, batch.shape, batch.dtype))
        return super().run_u8(batch, fmt, colour, infer)


def _run(clip, out, backend, **sink):
    source = open_source(clip)
    return Pipeline(source, backend, open_sink(str(out), source, **sink), PipelineConfig(progress=False)).run()


def test_yuv420p_reaches_backend_and_encoder_as_planes_without_swscale(tmp_path):
    clip = _clip(tmp_path / "in.mp4")
    be = Recording()
    s = _run(clip, tmp_path / "out.mkv", be, codec="ffv1")  # lossless: the file holds the backend's planes
    assert s["frames_out"] == 6 and s["frames_converted"]["count"] == 0 and s["layouts"] == ["yuv420p"]
    assert be.seen and all(f == ("yuv420p", (1, 72, 64), np.uint8) for f in be.seen)
    with av.open(clip) as c:
        first = next(c.decode(video=0)).to_ndarray(format="yuv420p")
    expect, _ = BicubicBackend(2).run_u8(first[None], "yuv420p")
    with av.open(str(tmp_path / "out.mkv")) as c:
        got = next(c.decode(video=0))
        assert got.format.name == "yuv420p" and (got.width, got.height) == (128, 96)
        assert np.array_equal(got.to_ndarray(format="yuv420p"), expect[0])


def test_other_pixel_formats_are_converted_once_and_counted(tmp_path):
    clip = _clip(tmp_path / "in444.mp4", pix_fmt="yuv444p")
    be = Recording()
    s = _run(clip, tmp_path / "out.mp4", be)
    assert s["frames_out"] == 6
    assert s["frames_converted"] == {"count": 6, "from": ["yuv444p"]}
    assert all(f[0] == "yuv420p" for f in be.seen)


def test_colour_tags_are_kept_and_a_graph_mismatch_is_one_line(tmp_path, capsys):
    clip = _clip(tmp_path / "bt709.mp4", colorspace=1)
    src = open_source(clip)
    assert src.colour.tagged and (src.colour.colorspace, src.colour.range) == ("bt709", "limited")
    s = _run(clip, tmp_path / "out.mp4", BicubicBackend(2))
    assert s["frames_out"] == 6
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].codec_context.colorspace == 1     # BT.709 kept on the output
    assert colour_check(src.colour, ("bt709", "limited"), "g.onnx") is None
    line = colour_check(src.colour, ("bt601", "limited"), "g.onnx")
    assert "\n" not in line and "bt709" in line and "--colorspace bt709" in line
    assert colour_check(Colour(), ("bt601", "full"), "g.onnx") is None   # untagged: takes the graph's


def test_codec_auto_opens_here_and_a_codec_that_does_not_falls_back_in_one_line(tmp_path, capfd):
    name, why = choose_encoder("x.mp4")
    assert codec_opens(name) is None and name in ("h264_nvenc", "libx264")
    clip = _clip(tmp_path / "in.mp4", n=3)
    out = tmp_path / "out.mp4"
    assert main([clip, "-o", str(out), "--backend", "bicubic", "--codec", "no_such_codec", "--hwdec", "h264_cuvid",
                 "--no-progress", "--json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["encoder"].startswith(name) and "--codec no_such_codec" in s["encoder"]
    assert s["decoder"] and ("NVDEC" in s["decoder"] or "software h264" in s["decoder"])
    err = capfd.readouterr().err
    assert "encoder " + name in err and "decoder " in err
    warn = [line for line in err.splitlines() if "no_such_codec" in line and line.startswith("warning:")]
    assert len(warn) == 1 and f"encoding with {name}" in warn[0]
    if "NVDEC" not in s["decoder"]:  # no driver here: one line, then software decode
        hw = [line for line in err.splitlines() if line.startswith("warning: --hwdec h264_cuvid")]
        assert len(hw) == 1 and hw[0].endswith("decoding in software")
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


def test_torch_backend_uint8_planes_match_the_host_float_path():
    import torch

    import lcoan
    torch.manual_seed(0)
    be = TorchBackend(lcoan.build_model("tiny", scale=2).eval(), device="cpu")
    rng = np.random.default_rng(0)
    colour = Colour("bt709", "limited", tagged=True)
    for fmt, x in (("yuv420p", rng.integers(16, 236, (2, 36, 32), dtype=np.uint8)),
                   ("rgb24", rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8))):
        got, bad = be.submit(x, fmt, colour).result()
        ref, _ = from_float(be.infer(to_float(x, fmt, colour)), fmt, colour)
        assert got.dtype == np.uint8 and got.shape == ref.shape and bad == []
        assert np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (pytest -m gpu on one)")
def test_cuda_submit_overlaps_and_matches_cpu():
    import torch

    import lcoan
    torch.manual_seed(0)
    model = lcoan.build_model("tiny", scale=2).eval()
    gpu, cpu = TorchBackend(model, device="cuda"), TorchBackend(model, device="cpu")
    x = np.random.default_rng(0).integers(16, 236, (1, 96, 128), dtype=np.uint8)
    pending = [gpu.submit(x, "yuv420p") for _ in range(3)]   # three in flight: the slots rotate
    outs = [p.result() for p in pending]
    ref, _ = cpu.run_u8(x, "yuv420p")
    for out, bad in outs:
        assert bad == [] and np.abs(out.astype(int) - ref).max() <= 2
    assert pending[0].device_ms is not None and pending[0].device_ms > 0


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return __import__("torch").cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _ort_cuda(), reason="needs a CUDA GPU and onnxruntime-gpu (pytest -m gpu on one)")
def test_ort_cuda_integer_graph_overlaps_and_matches_cpu(tmp_path):
    import torch

    import lcoan
    from app.backends import OrtBackend
    from export.to_onnx import export_onnx
    torch.manual_seed(0)
    graph = export_onnx(lcoan.build_model("tiny", scale=2).eval(), tmp_path / "i420.onnx", io="i420")
    gpu, cpu = OrtBackend(str(graph), device="cuda"), OrtBackend(str(graph), device="cpu")
    assert gpu.pipe is not None and "overlapped" in gpu.describe()["copies"]
    x = np.random.default_rng(0).integers(16, 236, (1, 96, 128), dtype=np.uint8)
    pending = [gpu.submit(x, "yuv420p") for _ in range(3)]   # three in flight: the slots rotate
    outs = [p.result() for p in pending]
    ref, _ = cpu.run_u8(x, "yuv420p")
    for out, bad in outs:
        assert bad == [] and out.shape == ref.shape and np.abs(out.astype(int) - ref).max() <= 2
    assert pending[0].device_ms is not None and pending[0].device_ms > 0


def test_video_sink_time_base_and_frame_count_with_planes(tmp_path):
    clip = _clip(tmp_path / "in.mp4", n=5)
    s = _run(clip, tmp_path / "out.mp4", BicubicBackend(2), preset="ultrafast", realtime=True)
    assert s["frames_out"] == 5 and "zerolatency" in (s["encoder"] or "") or "nvenc" in (s["encoder"] or "")
    with av.open(str(tmp_path / "out.mp4")) as c:
        v = c.streams.video[0]
        assert v.average_rate == Fraction(30) and sum(1 for _ in c.decode(v)) == 5


def test_benchmark_runs_the_app_beside_the_reference_loop_and_the_model(tmp_path, capsys):
    from benchmarks import app as bench
    out = tmp_path / "b.json"
    assert bench.main(["--frames", "6", "--repeats", "1", "--model-frames", "3", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    ref, row = data["rows"]
    assert ref["fps"] > 0 and row["label"] == "bicubic"
    assert row["frames_written"] == 6 and row["size"] == "1920x1080" and row["frames_converted"] == 0
    assert row["model_only_fps"] > 0 and row["vs_reference"] == pytest.approx(row["fps"] / ref["fps"])
    assert set(row["stages_ms"]) >= {"decode", "pre", "infer", "post", "encode"}
    assert "| bicubic |" in data["table"] and "| bicubic |" in capsys.readouterr().out


def test_gpu_benchmark_without_a_gpu_says_so_and_exits_0(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: make gpu-check runs the real thing")
    from benchmarks import app as bench
    assert bench.main(["--gpu", "--json", ""]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


def _nearest_i420_graph(path):
    """An i420-I/O graph (the names, types and metadata of export.to_onnx --io i420) whose network
    is a nearest-neighbour x2: the plumbing of planes in and out, checkable to the bit."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [3], [1.0, 2.0, 2.0])
    nodes, inputs, outputs = [], [], []
    for name in ("y", "u", "v"):
        inputs.append(helper.make_tensor_value_info(name, TensorProto.UINT8, ["n", "h", "w"]))
        outputs.append(helper.make_tensor_value_info(f"{name}_sr", TensorProto.UINT8, ["n", "h2", "w2"]))
        nodes.append(helper.make_node("Resize", [name, "", "scales"], [f"{name}_sr"], mode="nearest"))
    model = helper.make_model(helper.make_graph(nodes, "i420", inputs, outputs, [scales]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (("lcoan_scale", "2"), ("lcoan_sort", "onnx"), ("lcoan_dtype", "fp32"), ("lcoan_io", "i420"),
                       ("lcoan_config", "{}"), ("lcoan_colorspace", "bt601"), ("lcoan_range", "limited")):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return str(path)


def test_onnxruntime_feeds_an_i420_graph_the_planes_and_refuses_a_colour_mismatch(tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    from app.backends import OrtBackend
    graph = _nearest_i420_graph(tmp_path / "g.onnx")
    be = OrtBackend(graph, device="cpu")
    assert be.formats == ("yuv420p",) and be.graph_colour == ("bt601", "limited")
    x = np.random.default_rng(0).integers(0, 256, (2, 36, 32), dtype=np.uint8)
    out, bad = be.run_u8(x, "yuv420p")
    h = 24
    y, u = x[:, :h], x[:, h:h + h // 4].reshape(2, h // 2, 16)
    assert out.shape == (2, 72, 64) and bad == []
    assert np.array_equal(out[:, :2 * h], y.repeat(2, 1).repeat(2, 2))
    assert np.array_equal(out[:, 2 * h:2 * h + h // 2].reshape(2, h, 32), u.repeat(2, 1).repeat(2, 2))
    clip = _clip(tmp_path / "bt709.mp4", colorspace=1, n=2)
    code = main([clip, "-o", str(tmp_path / "o.mp4"), "--model", graph, "--no-progress"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bt709" in err[0] and "--colorspace bt709" in err[0]


def test_nv12_from_nvdec_is_deinterleaved_without_swscale():
    from app.frames import CONVERSIONS, planes_of
    rng = np.random.default_rng(2)
    i420 = av.VideoFrame.from_ndarray(rng.integers(0, 256, (36, 32), dtype=np.uint8), format="yuv420p")
    nv12 = i420.reformat(format="nv12")   # the layout h264_cuvid hands back in host memory
    before = CONVERSIONS.count
    planes, fmt = planes_of(nv12)
    assert fmt == "yuv420p" and CONVERSIONS.count == before
    assert np.array_equal(planes, i420.to_ndarray(format="yuv420p"))
