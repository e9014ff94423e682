"""INT8 calibration: tiles, Q/DQ graph structure (only Conv in INT8, FP32 bias), both sort forms on
ONNX Runtime CPU, drift and cluster-id flips, sensitivity, CLI errors."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from calib.quantize import (CalibrationError, calibration_tiles, default_exclusions, evaluate, kept_out_nodes,
                            quantize, quantized_consumers, sensitivity)
from export import export_onnx, ort_ops
from tests.conftest import REPO, shared_path

logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def set14_lr():
    return shared_path("data", "benchmark", "Set14", "LR_bicubic", "X2")


@pytest.fixture(scope="module")
def graphs(tiny, tmp_path_factory, set14_lr):
    folder = tmp_path_factory.mktemp("calib")
    fp32 = export_onnx(tiny, folder / "tiny.onnx")
    plugin = export_onnx(tiny, folder / "tiny_plugin.onnx", sort="plugin")
    tiles = calibration_tiles(set14_lr, num=8, tile=(40, 40))
    int8 = quantize(fp32, folder / "tiny_int8.onnx", tiles=tiles).path
    return {"dir": folder, "fp32": fp32, "plugin": plugin, "int8": int8, "tiles": tiles}


def test_calibration_tiles_are_lr_crops(set14_lr):
    tiles = calibration_tiles(set14_lr, num=20, tile=(32, 48))
    assert len(tiles) == 20
    for t in tiles:
        assert t.dtype == np.float32 and t.shape == (1, 3, 32, 48)
        assert 0.0 <= t.min() and t.max() <= 1.0
    assert len({t.tobytes() for t in tiles}) == 20


def test_calibration_tiles_from_downscaled_hr():
    t91 = shared_path("data", "train", "T91")
    tiles = calibration_tiles(t91, num=4, tile=(24, 24), downscale=2)
    assert len(tiles) == 4 and all(t.shape == (1, 3, 24, 24) for t in tiles)


def test_default_exclusions_are_the_image_side_matching_and_body_convs(graphs):
    names = default_exclusions(graphs["fp32"])
    scopes = {n.split("/")[-2] for n in names}
    assert {"head", "match_conv", "body_conv", "tail_conv"} <= scopes, names
    assert any("/upsampler/" in n for n in names)
    convs = [n.name for n in onnx.load(str(graphs["fp32"])).graph.node if n.op_type == "Conv"]
    assert set(names) < set(convs) and not any("/groups." in n and "/match_conv/" not in n for n in names)


def test_qdq_graph_passes_checker_and_quantizes_only_conv(graphs):
    proto = onnx.load(str(graphs["int8"]))
    onnx.checker.check_model(proto, full_check=True)
    nodes = {n.name: n for n in proto.graph.node}
    consumers = quantized_consumers(proto)
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    assert set(convs) <= set(consumers)
    # A quantised tensor also reaches the other readers of the same activation (Relu, Add,
    # Reshape, ...) as its dequantised copy; none of them is an attention or clustering op.
    assert not {nodes[c].op_type for c in consumers} & {"MatMul", "ArgMax", "ReduceLogSumExp", "Exp",
                                                       "Softmax", "GatherElements", "ScatterElements"}
    # cluster assignment, attention and the sort stay floating point
    for name in kept_out_nodes(proto):
        assert name not in consumers
    assert any(n.op_type == "ArgMax" for n in proto.graph.node)
    # no int32 bias DequantizeLinear (TensorRT rejects it): biases stay FP32 initializers
    int32_inits = [t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT32]
    dq_inputs = {i for n in proto.graph.node if n.op_type == "DequantizeLinear" for i in n.input}
    assert not (set(int32_inits) & dq_inputs)
    # symmetric: every zero point is 0
    for t in proto.graph.initializer:
        if "zero_point" in t.name:
            assert not onnx.numpy_helper.to_array(t).any(), t.name
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["lcoan_dtype"] == "int8" and "lcoan_calib" in meta and meta["lcoan_scale"] == "2"


def test_qdq_graph_runs_on_ort_cpu_close_to_fp32(graphs):
    lr = graphs["tiles"][0]
    ref = ort_ops.session(str(graphs["fp32"])).run(["sr"], {"lr": lr})[0]
    out = ort_ops.session(str(graphs["int8"])).run(["sr"], {"lr": lr})[0]
    assert out.shape == ref.shape
    mse = float(np.mean((np.clip(out, 0, 1) - np.clip(ref, 0, 1)) ** 2))
    assert -10 * np.log10(max(mse, 1e-12)) > 25.0


def test_plugin_graph_quantizes_and_runs_on_cpu(graphs):
    out = quantize(graphs["plugin"], graphs["dir"] / "tiny_plugin_int8.onnx", tiles=graphs["tiles"][:4]).path
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    sort_nodes = [n for n in proto.graph.node if n.op_type == "LCoAClusterSort"]
    assert sort_nodes and all(n.domain == "lcoan" for n in sort_nodes)  # TensorRT form kept on disk
    lr = graphs["tiles"][1]
    a = ort_ops.session(proto).run(["sr"], {"lr": lr})[0]
    b = ort_ops.session(str(graphs["int8"])).run(["sr"], {"lr": lr})[0]
    assert np.isfinite(a).all() and np.abs(a - b).max() < 0.05


@pytest.mark.slow
def test_evaluate_reports_psnr_loss_and_cluster_flips(graphs):
    from export.samples import benchmark_samples
    shared_path("data", "benchmark", "Set5")
    samples = benchmark_samples(2, sets=("Set5",), limit=2)
    report = evaluate(graphs["fp32"], graphs["int8"], samples, 2)
    assert len(report.images) == 2 and report.positions > 0
    assert 0.0 <= report.cluster_flip_fraction < 0.5
    assert np.isfinite(report.psnr_loss_db)
    same = evaluate(graphs["fp32"], graphs["fp32"], samples[:1], 2)
    assert same.cluster_flip_fraction == 0.0 and same.psnr_loss_db == 0.0


@pytest.mark.slow
def test_sensitivity_reuses_calibration(graphs, tmp_path):
    from export.samples import benchmark_samples
    samples = benchmark_samples(2, sets=("Set5",), limit=1)
    convs = [n.name for n in onnx.load(str(graphs["fp32"])).graph.node if n.op_type == "Conv"][:2]
    rows = sensitivity(graphs["fp32"], samples, 2, tmp_path / "ranges.json", graphs["tiles"], nodes=convs,
                       workdir=tmp_path)
    assert (tmp_path / "ranges.json").is_file()
    assert rows[0]["node"] == "(none excluded)" and {r["node"] for r in rows[1:]} == set(convs)
    excluded = onnx.load(str(tmp_path / "ex0.onnx"))
    assert convs[0] not in quantized_consumers(excluded)


def test_quantize_rejects_bad_inputs(graphs, tmp_path):
    with pytest.raises(CalibrationError, match="already has QuantizeLinear"):
        quantize(graphs["int8"], tmp_path / "x.onnx", tiles=graphs["tiles"])
    with pytest.raises(CalibrationError, match="no node named"):
        quantize(graphs["fp32"], tmp_path / "x.onnx", tiles=graphs["tiles"], exclude=["/nope/Conv"])
    with pytest.raises(CalibrationError, match="no such image folder"):
        calibration_tiles(tmp_path / "missing")
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        quantize(graphs["fp32"], tmp_path / "x.onnx", tiles=graphs["tiles"], method="mse")


@pytest.mark.slow
def test_cli_writes_graph_and_errors_in_one_line(graphs, set14_lr, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "cli_int8.onnx"
    ok = subprocess.run([sys.executable, "-m", "calib", "--onnx", str(graphs["fp32"]), "--images", str(set14_lr),
                         "--out", str(out), "--num", "4", "--tile", "32x32", "--method", "percentile"],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert out.is_file() and "Conv in INT8" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "calib", "--onnx", str(graphs["fp32"]), "--images",
                          str(tmp_path / "nothing")], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nothing'}: no such image folder"]


def test_integer_io_graph_quantizes_only_the_network(graphs):
    """An i420 graph calibrates on its own planes; the conversions around the network hold no
    Conv and stay FP32, and the Q/DQ graph keeps the I/O and colours of its source."""
    from export.integer_io import frames_from_rgb, is_io_node
    from export.to_onnx import with_io
    from lcoan.graph_io import read_io, save_onnx
    src = save_onnx(with_io(onnx.load(str(graphs["fp32"])), "i420", "bt601"), graphs["dir"] / "tiny_i420.onnx")
    out = quantize(src, graphs["dir"] / "tiny_i420_int8.onnx", tiles=graphs["tiles"][:4]).path
    proto = onnx.load(str(out))
    io = read_io(proto)
    assert (io.mode, io.colorspace, io.range) == ("i420", "bt601", "limited")
    consumers = set(quantized_consumers(proto))
    assert not [n.name for n in proto.graph.node if is_io_node(n.name) and n.name in consumers]
    assert {n.op_type for n in proto.graph.node if n.name in consumers} >= {"Conv"}
    feed = frames_from_rgb(io, graphs["tiles"][0])
    ref = ort_ops.session(str(src)).run(None, feed)
    got = ort_ops.session(proto).run(None, feed)
    for a, b in zip(got, ref):
        assert a.dtype == np.uint8 and a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # INT8 drift, in levels
