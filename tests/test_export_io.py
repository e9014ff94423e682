"""Integer graph I/O: the colour conversions (lcoan.color), the rgb8 and i420 graphs against the
float model on real images and a real decoded frame, their metadata, and every --sort/--precision."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, shared_path
from lcoan import color

CLIP = REPO / "samples" / "sample_clip.mp4"


# --------------------------------------------------------------------------- lcoan.color
def test_bt709_limited_matches_the_published_coefficients():
    # NOTES.md / ITU-R BT.709 8-bit: R = 1.1644 (Y-16) + 1.7927 (V-128), G = 1.1644 (Y-16)
    # - 0.2132 (U-128) - 0.5329 (V-128), B = 1.1644 (Y-16) + 2.1124 (U-128); the module derives
    # them from Kr and Kb only.
    m = np.array(color.yuv_to_rgb_matrix("bt709", "limited")) * 255
    np.testing.assert_allclose(m, [[1.1644, 0, 1.7927], [1.1644, -0.2132, -0.5329], [1.1644, 2.1124, 0]],
                               atol=6e-5)
    # BT.601 full range is JPEG's (JFIF): R = Y + 1.402 (Cr-128), G = Y - 0.344136 (Cb-128) - 0.714136 (Cr-128)
    m = np.array(color.yuv_to_rgb_matrix("bt601", "full")) * 255
    np.testing.assert_allclose(m, [[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], atol=1e-5)


@pytest.mark.parametrize("colorspace", color.COLORSPACES)
@pytest.mark.parametrize("range_", color.RANGES)
def test_flat_colours_survive_the_round_trip(colorspace, range_):
    # Flat colours: chroma filtering plays no part, so only the matrix and the 8-bit rounding do.
    torch.manual_seed(1)
    rgb = torch.rand(64, 3, 1, 1).expand(64, 3, 4, 6).contiguous()
    y, u, v = color.rgb_to_i420(rgb, colorspace, range_)
    assert (y.dtype, y.shape, u.shape, v.shape) == (torch.uint8, (64, 4, 6), (64, 2, 3), (64, 2, 3))
    back = color.i420_to_rgb(y, u, v, colorspace, range_)
    # a code step is 1/219 of Y' (limited) and moves R, G, B by up to ~1.2 levels; half a step of
    # each of Y, Cb, Cr adds up to less than 2 levels
    assert (back - rgb).abs().max().item() * 255 < 2.0
    rgb8 = color.float_to_rgb8(back)
    assert rgb8.shape == (64, 4, 6, 3) and rgb8.dtype == torch.uint8


def test_rgb8_round_trip_is_exact():
    x = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    f = color.rgb8_to_float(x)
    assert f.shape == (2, 3, 5, 7) and f.dtype == torch.float32 and 0 <= f.min() and f.max() <= 1
    assert torch.equal(color.float_to_rgb8(f), x)
    assert torch.equal(color.float_to_rgb8(torch.tensor([-1.0, 2.0, 0.5 / 255, 1.5 / 255]).view(1, 1, 1, 4)
                                           .expand(1, 3, 1, 4)), torch.tensor([0, 255, 0, 2], dtype=torch.uint8)
                       .view(1, 1, 4, 1).expand(1, 1, 4, 3))  # clamp, and ties round to even


def test_chroma_siting_is_left_and_centred():
    c = torch.tensor([[0.0, 4.0], [8.0, 12.0]]).view(1, 1, 2, 2)
    up = color.upsample_chroma(c)[0, 0]
    # rows: 3/4 own + 1/4 neighbour (centred); columns: even = the sample, odd = the mean (co-sited)
    assert up[:, 0].tolist() == [0.0, 2.0, 6.0, 8.0]
    assert up[0].tolist() == [0.0, 2.0, 4.0, 4.0]
    # down-sampling on the same grid keeps a linear ramp across columns and a flat plane
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 4, 8)
    assert color.downsample_chroma(ramp)[0, 0, 0, 1:].tolist() == [2.0, 4.0, 6.0]  # columns 2, 4, 6
    assert torch.equal(color.downsample_chroma(torch.full((1, 2, 4, 6), 3.0)), torch.full((1, 2, 2, 3), 3.0))


def test_odd_sizes_and_unknown_names_are_one_line():
    with pytest.raises(color.ColorError, match="even width and height"):
        color.rgb_to_i420(torch.rand(1, 3, 5, 6))
    y = torch.zeros(1, 4, 6, dtype=torch.uint8)
    with pytest.raises(color.ColorError, match="chroma planes"):
        color.i420_to_rgb(y, torch.zeros(1, 2, 2, dtype=torch.uint8), torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(color.ColorError, match="colour space"):
        color.i420_to_rgb(y, y[:, :2, :3], y[:, :2, :3], colorspace="bt2020")
    with pytest.raises(color.ColorError, match="range"):
        color.rgb_to_i420(torch.rand(1, 3, 4, 6), range="tv")


def _first_frame():
    av = pytest.importorskip("av")
    with av.open(str(CLIP)) as container:
        return next(container.decode(video=0))


def test_matrix_agrees_with_swscale_on_a_real_frame():
    # swscale (yuv420p -> rgb24, untagged stream -> BT.601 limited) repeats chroma samples; with
    # the same repetition our matrix gives its colours within its fixed-point error.
    frame = _first_frame()
    y, u, v = (torch.from_numpy(np.ascontiguousarray(p))[None] for p in
               color.split_yuv420p(frame.to_ndarray(format="yuv420p")))
    assert y.shape[1:] == (frame.height, frame.width) and u.shape[1:] == (frame.height // 2, frame.width // 2)
    sws = frame.to_ndarray(format="rgb24").astype(np.int16)
    m = np.array(color.yuv_to_rgb_matrix("bt601", "limited"))
    rep = lambda p: np.repeat(np.repeat(p[0].numpy().astype(np.float64), 2, 0), 2, 1)  # noqa: E731
    yy, cb, cr = y[0].numpy().astype(np.float64) - 16, rep(u) - 128, rep(v) - 128
    ours = np.stack([m[i][0] * yy + m[i][1] * cb + m[i][2] * cr for i in range(3)], -1)
    diff = np.abs(np.clip(np.round(ours * 255), 0, 255) - sws)
    assert diff.max() <= 3 and (diff <= 1).mean() > 0.7, (diff.max(), (diff <= 1).mean())
    # and the module's own conversion (interpolated chroma) stays close to it on smooth content
    rgb = color.float_to_rgb8(color.i420_to_rgb(y, u, v, "bt601", "limited"))[0].numpy().astype(np.int16)
    assert np.median(np.abs(rgb - sws)) <= 2


# --------------------------------------------------------------------------- the graphs
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")
import onnx  # noqa: E402

from export.integer_io import WithFrames, frames_from_rgb, is_io_node  # noqa: E402
from export.samples import load_samples  # noqa: E402
from lcoan.graph_io import read_io  # noqa: E402
from export.to_onnx import build_onnx, check_graph, default_onnx_path, with_io  # noqa: E402
from lcoan.graph_io import GraphIO, MetadataError, io_for, read_io, read_metadata  # noqa: E402
from verify import parity  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tiny):
    """tiny x2: the float FP32 graph; rgb8 and i420 bt601/full made from it (with_io); i420 bt709
    limited around its plugin-sort FP16 form, as build_onnx(sort="plugin", dtype="fp16", io="i420")
    makes it (one trace: the CLI tests export with --io through build_onnx)."""
    from export.graph import replace_counting_sort
    from export.precision import to_fp16
    fp32 = build_onnx(tiny)
    plugin16 = to_fp16(replace_counting_sort(fp32))
    meta = read_metadata(fp32)
    from lcoan.graph_io import write_metadata
    import dataclasses
    write_metadata(plugin16, dataclasses.replace(meta, sort="plugin", dtype="fp16"))
    i420 = with_io(plugin16, "i420")
    check_graph(i420)
    return {"float": fp32, "rgb8": with_io(fp32, "rgb8"), "i420_601_full": with_io(fp32, "i420", "bt601", "full"),
            "i420": i420}


def _elem(v):
    return onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)


def _dims(v):
    return [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]


def test_integer_graphs_say_what_they_take(graphs):
    io = {name: read_io(p) for name, p in graphs.items()}
    assert io["float"] == GraphIO("float", ("lr",), ("sr",), None, None, 2)
    assert io["rgb8"] == GraphIO("rgb8", ("lr",), ("sr",), None, None, 2)
    assert io["i420"] == GraphIO("i420", ("y", "u", "v"), ("y_sr", "u_sr", "v_sr"), "bt709", "limited", 2)
    assert (io["i420_601_full"].colorspace, io["i420_601_full"].range) == ("bt601", "full")
    # the float graph is today's: no io key at all
    assert "lcoan_io" not in {p.key for p in graphs["float"].metadata_props}
    meta = read_metadata(graphs["i420"])
    assert (meta.io, meta.colorspace, meta.range, meta.sort, meta.dtype) == ("i420", "bt709", "limited", "plugin", "fp16")
    rgb8 = graphs["rgb8"].graph
    assert [_elem(v) for v in (*rgb8.input, *rgb8.output)] == ["UINT8", "UINT8"]
    assert _dims(rgb8.input[0])[3] == 3 and _dims(rgb8.output[0])[3] == 3
    i420 = graphs["i420"].graph
    assert [v.name for v in i420.input] == ["y", "u", "v"] and {_elem(v) for v in i420.output} == {"UINT8"}
    assert all(len(_dims(v)) == 3 for v in (*i420.input, *i420.output))
    for p in graphs.values():
        check_graph(p)
    # the float network inside is the float graph, node for node
    core = [n.name for n in graphs["rgb8"].graph.node if not is_io_node(n.name)]
    assert core == [n.name for n in graphs["float"].graph.node]
    assert any(n.op_type == "LCoAClusterSort" for n in i420.node)
    assert io["i420"].input_shapes(2, 6, 8) == {"y": (2, 6, 8), "u": (2, 3, 4), "v": (2, 3, 4)}
    assert io["rgb8"].output_shapes(1, 6, 8) == {"sr": (1, 12, 16, 3)}


def test_fp16_graph_keeps_its_conversions_in_fp32(graphs):
    p = graphs["i420"]
    io_nodes = [n for n in p.graph.node if is_io_node(n.name)]
    assert len(io_nodes) > 20
    for n in io_nodes:
        for a in n.attribute:
            if a.name == "to":
                assert a.i != onnx.TensorProto.FLOAT16, n.name
    inits = {t.name: t for t in p.graph.initializer}
    assert not [i for n in io_nodes for i in n.input if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT16]
    # and the network between them is FP16
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in p.graph.initializer)


def test_metadata_that_contradicts_the_graph_is_refused(graphs):
    p = onnx.ModelProto()
    p.CopyFrom(graphs["float"])
    p.metadata_props.add(key="lcoan_io", value="i420")
    with pytest.raises(MetadataError, match="a i420 graph has inputs"):
        read_io(p)
    p.metadata_props[-1].value = "yuv444"
    with pytest.raises(MetadataError, match="lcoan_io"):
        read_io(p)
    with pytest.raises(MetadataError, match="for --io i420"):
        io_for("rgb8", colorspace="bt601")


def test_default_names_never_collide():
    names = {default_onnx_path(None, 2, sort, dtype, io_for(mode, cs, rng) if mode == "i420" else mode)
             for sort in ("onnx", "plugin") for dtype in ("fp32", "fp16") for mode in ("float", "rgb8", "i420")
             for cs in ("bt601", "bt709") for rng in ("limited", "full")}
    assert len(names) == 2 * 2 * (1 + 1 + 4)
    assert default_onnx_path(None, 2, "onnx", "fp16", "i420").name == "lcoan_edge_x2_i420_fp16.onnx"
    assert default_onnx_path(None, 2, "onnx", "fp32", "float").name == "lcoan_edge_x2_fp32.onnx"


# --------------------------------------------------------------------------- parity
@pytest.fixture(scope="module")
def images():
    """Crops of real LR images (the tiny model on CPU is slow at full size): Set5 bird 64x64, and
    Set14 comic's right edge, 63x45 (odd: its last row is dropped for i420), with its HR crop."""
    picks = []
    for folder, name, rows, cols in (("Set5", "bird", slice(40, 104), slice(40, 104)),
                                     ("Set14", "comic", slice(117, 180), slice(80, 125))):
        path = shared_path("data", "benchmark", folder, "LR_bicubic", "X2")
        s = next(s for s in load_samples(path, 2) if s.name == name)
        hr = s.hr[..., 2 * rows.start:2 * rows.stop, 2 * cols.start:2 * cols.stop] if s.hr is not None else None
        picks.append(type(s)(name, np.ascontiguousarray(s.lr[..., rows, cols]), hr))
    return picks


def test_rgb8_graph_is_the_float_model_rounded(tiny, graphs, images):
    """Bar: within 1 level of the float model rounded on >= 99.9% of values."""
    io = read_io(graphs["rgb8"])
    report = parity.compare(parity.torch_frames_runner(tiny, io), parity.ort_runner(graphs["rgb8"], io=io),
                            images[:1], scale=2, precision="fp32", io=io)
    assert report.passed, report.table()
    for r in report.images:
        assert r.max_levels <= 1 and r.within >= 0.999
    # the reference is what the bar says: the float model on the 8-bit image, clamped and rounded
    lr = images[0].lr
    feed = frames_from_rgb(io, lr)
    with torch.no_grad():
        sr = tiny(torch.from_numpy(feed["lr"]).permute(0, 3, 1, 2).float() / 255).numpy()
    rounded = np.clip(np.round(np.clip(sr, 0, 1) * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(parity.torch_frames_runner(tiny, io)(feed)[0], rounded)


def test_i420_graph_bound_on_real_images(tiny, graphs, images):
    """Bound: each of Y, U, V within 1 level of the float model between the same conversions
    (lcoan.color in PyTorch) on >= 99.9% of its values (here BT.601 full range; the decoded frame
    below takes the FP16 plugin-sort graph in BT.709 limited range)."""
    io = read_io(graphs["i420_601_full"])
    report = parity.compare(parity.torch_frames_runner(tiny, io), parity.ort_runner(graphs["i420_601_full"], io=io),
                            images, scale=2, precision="fp32", io=io)
    assert report.passed, report.table()
    assert all(r.max_levels <= 2 and r.within >= 0.999 for r in report.images), report.table()
    comic = next(r for r in report.images if r.name == "comic")
    assert comic.lr_shape == [1, 3, 62, 44] and "cropped" in comic.note
    assert comic.reference_psnr_y is not None  # scored against the HR crop


def test_i420_graph_bound_on_a_decoded_video_frame(tiny, graphs):
    frame = _first_frame()
    y, u, v = color.split_yuv420p(frame.to_ndarray(format="yuv420p"))
    feed = {"y": y[None].copy(), "u": u[None].copy(), "v": v[None].copy()}
    io = read_io(graphs["i420"])
    ref = parity.torch_frames_runner(tiny, io)(feed)
    out = parity.ort_runner(graphs["i420"], io=io)(feed)
    assert [o.shape for o in out] == [(1, 2 * frame.height, 2 * frame.width)] + [(1, frame.height, frame.width)] * 2
    for name, a, b in zip(io.outputs, out, ref):
        assert a.dtype == np.uint8
        d = np.abs(a.astype(int) - b.astype(int))
        assert (d <= 1).mean() >= 0.999 and d.max() <= 2, (name, d.max(), (d <= 1).mean())
        assert parity.LEVEL_THRESHOLDS["fp16"].passes(a, b)


def test_odd_sizes_are_refused_in_one_line(graphs):
    io = read_io(graphs["i420"])
    with pytest.raises(ValueError, match="even width and height") as info:
        io.check_size(5, 6)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="even width and height"):
        frames_from_rgb(io, np.zeros((1, 3, 6, 7), np.float32))
    with pytest.raises(ValueError, match="even width and height"):
        io.input_shapes(1, 7, 8)
    read_io(graphs["rgb8"]).check_size(5, 7)  # rgb8 and float take any size


def test_parity_cli_on_an_integer_graph(graphs, tiny_weights, tmp_path):
    from lcoan.errors import exit_status
    path = tmp_path / "rgb8.onnx"
    path.write_bytes(graphs["rgb8"].SerializeToString())
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)).save(images / "noise.png")
    status = exit_status(parity.main, ["--onnx", str(path), "--weights", str(tiny_weights), "--images", str(images),
                                       "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert status == 0
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["io"] == "rgb8" and report["thresholds"] == {"levels": 1, "quantile": 0.999}


def test_triton_configs_follow_the_graph_io(graphs, tmp_path):
    pytest.importorskip("engine.trt")
    from engine.trt import TrtNotInstalled, import_trt
    try:
        import_trt()
    except TrtNotInstalled as exc:
        pytest.skip(str(exc))
    from serve import repository
    for key, dims in (("rgb8", {"lr": [-1, -1, 3], "sr": [-1, -1, 3]}),
                      ("i420", {"y": [-1, -1], "u": [-1, -1], "y_sr": [-1, -1], "v_sr": [-1, -1]})):
        path = tmp_path / f"{key}.onnx"
        path.write_bytes(graphs[key if key == "rgb8" else "i420_601_full"].SerializeToString())
        io = repository.network_io(path)
        assert io == repository.onnx_io(path) or repository.io_mismatch(io, repository.onnx_io(path)) is None
        specs = {s.name: s for s in io["inputs"] + io["outputs"]}
        for name, want in dims.items():
            assert specs[name].data_type == "TYPE_UINT8" and specs[name].config_dims() == want, specs[name]
        params = repository.graph_parameters(read_io(path))
        assert params == ({"lcoan_io": "rgb8"} if key == "rgb8" else
                          {"lcoan_io": "i420", "lcoan_colorspace": "bt601", "lcoan_range": "full"})
        for text in (repository.production_config(io["inputs"], io["outputs"], max_batch=2, parameters=params),
                     repository.cpu_config(io["inputs"], io["outputs"], max_batch=2, parameters=params)):
            assert "TYPE_FP32" not in text and text.count("TYPE_UINT8") == len(specs)
            try:
                config = repository.parse_config(text)
            except Exception as exc:  # noqa: BLE001 - without tritonclient the schema check is skipped
                assert "needs tritonclient" in str(exc)
                continue
            assert {k: v.string_value for k, v in config.parameters.items()}.items() >= params.items()
