"""ONNX export: graph structure, both sort forms against PyTorch, FP16, and one-line CLI errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")

from conftest import shared_path  # noqa: E402
from lcoan import build_model  # noqa: E402
from lcoan.checkpoint import save_safetensors  # noqa: E402

from export import graph as graph_lib  # noqa: E402
from export import ort_ops  # noqa: E402
from verify import parity  # noqa: E402
from export.sort_reference import cluster_sort_reference  # noqa: E402
from export.to_onnx import ClusterSortScope, build_onnx, check_graph, export_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# 1x1, smaller than one window (tiny: 16), 64x64, 100x75 (HxW), 4900 positions (> TopK's 3840)
SIZES = [(1, 1), (3, 5), (64, 64), (100, 75), (70, 70)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():  # spread the centroids so that every cluster gets members
        for m in model.modules():
            if hasattr(m, "centroids"):
                m.centroids.copy_(torch.nn.functional.normalize(torch.randn_like(m.centroids), dim=-1))
    return model


@pytest.fixture(scope="module")
def graphs(tiny):
    return {sort: build_onnx(tiny, sort=sort) for sort in ("onnx", "plugin")}


def _torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- structure
def test_graph_is_valid_dynamic_and_has_no_topk(graphs):
    for sort, proto in graphs.items():
        check_graph(proto)  # full checker + strict shape inference
        (inp,), (out,) = proto.graph.input, proto.graph.output
        assert (inp.name, out.name) == ("lr", "sr")
        dims = inp.type.tensor_type.shape.dim
        assert [d.dim_param != "" for d in dims] == [True, False, True, True], sort
        assert dims[1].dim_value == 3
        out_dims = out.type.tensor_type.shape.dim
        assert all(d.dim_param for i, d in enumerate(out_dims) if i != 1)
        ops = graph_lib.op_counts(proto)
        assert ops["TopK"] == 0
        assert ops["ReduceLogSumExp"] + ops["Softmax"] == 1, "lcoa: the pattern is computed once"
        assert ops["ArgMax"] == 1


def test_ort_folds_every_attention_layout_change_into_its_conv_reorders(graphs, tmp_path):
    """Each NCHW <-> NHWC change of the attention sits next to a convolution, so ONNX Runtime's
    NCHWc transformer turns it into a channels-last reorder: no Transpose survives, and no
    feature map is reordered back to NCHW just for a Shape (one extra pass over it each)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(graphs["onnx"].SerializeToString(), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    ops = [n.op_type for n in nodes]
    assert "ReorderInput" in ops, "the NCHWc transformer did not run; the test proves nothing"
    assert ops.count("Transpose") == 0
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n.op_type)
    channels_first_for_shape = [n.output[0] for n in nodes if n.op_type == "ReorderOutput"
                                and consumers.get(n.output[0]) == ["Shape"]
                                and "/match_conv/" not in n.output[0]]  # the pattern's grid: once
    assert channels_first_for_shape == []


def test_centroids_are_frozen_initializers(tiny, graphs):
    centroids = tiny.groups[0].attention.kmeans.centroids.numpy()
    proto = graphs["onnx"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
              for n in proto.graph.node if n.op_type == "Constant" and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    values = {**inits, **consts}
    matmul = next(n for n in proto.graph.node if n.op_type == "MatMul" and "/kmeans/" in n.name)
    weight = values[matmul.input[1]]
    np.testing.assert_array_equal(weight, centroids.T)
    argmax = next(n for n in proto.graph.node if n.op_type == "ArgMax")
    assert matmul.output[0] in argmax.input


def test_counting_sort_form_has_no_plugin_and_plugin_form_has_one_node(graphs):
    onnx_ops = graph_lib.op_counts(graphs["onnx"])
    assert onnx_ops[graph_lib.PLUGIN_OP] == 0
    assert onnx_ops["ScatterElements"] == 1 and onnx_ops["CumSum"] == 2

    proto = graphs["plugin"]
    ops = graph_lib.op_counts(proto)
    assert ops[graph_lib.PLUGIN_OP] == 1
    for op in graph_lib.COUNTING_SORT_OPS:
        assert ops[op] == 0, op
    assert graph_lib.orphan_nodes(proto) == []
    node = next(n for n in proto.graph.node if n.op_type == graph_lib.PLUGIN_OP)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == "lcoan"
    assert attrs == {"plugin_version": b"1", "plugin_namespace": b"lcoan", "num_clusters": 8}
    assert any(o.domain == "lcoan" for o in proto.opset_import)
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    for name in list(node.input) + list(node.output):
        assert types[name] == onnx.TensorProto.INT32, name
    # nothing of the counting sort survives, only the plugin and its casts
    left = [n.op_type for n in proto.graph.node if "sort_fn/" in n.name]
    assert sorted(left) == ["Cast", "Cast", "Cast", graph_lib.PLUGIN_OP]


def test_lsp_mode_gets_one_plugin_per_group():
    model = build_model("tiny", attention="lsp").eval()
    proto = build_onnx(model, sort="plugin")
    assert graph_lib.op_counts(proto)[graph_lib.PLUGIN_OP] == model.config.n_groups
    assert graph_lib.orphan_nodes(proto) == []


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("sort", ["onnx", "plugin"])
def test_both_sort_forms_match_pytorch_at_many_sizes(tiny, graphs, sort):
    run = parity.ort_runner(graphs[sort])
    rng = np.random.default_rng(1)
    for h, w in SIZES:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        ref, out = _torch(tiny, x), run(x)
        assert out.shape == (1, 3, 2 * h, 2 * w)
        drift, max_abs = parity.drift_psnr(out, ref), float(np.abs(out - ref).max())
        assert parity.THRESHOLDS["fp32"].passes(out, ref), (sort, h, w, drift, max_abs)
        assert max_abs <= 1e-4, (sort, h, w, max_abs)


def test_batch_of_two(tiny, graphs):
    x = np.random.default_rng(2).random((2, 3, 9, 13), dtype=np.float32)
    for proto in graphs.values():
        np.testing.assert_allclose(parity.ort_runner(proto)(x), _torch(tiny, x), atol=1e-5)


def test_export_writes_file_and_reloads(tiny, tmp_path):
    path = export_onnx(tiny, tmp_path / "m.onnx", sort="plugin")
    proto = onnx.load(str(path))
    assert graph_lib.op_counts(proto)[graph_lib.PLUGIN_OP] == 1
    assert next(n for n in proto.graph.node if n.op_type == graph_lib.PLUGIN_OP).domain == "lcoan"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["lcoan_sort"] == "plugin" and meta["lcoan_scale"] == "2"


# --------------------------------------------------------------------------- the sort alone
class _SortOnly(torch.nn.Module):
    def __init__(self, num_clusters: int):
        super().__init__()
        self.num_clusters = num_clusters
        self.sort_fn = ClusterSortScope()

    def forward(self, ids):
        return self.sort_fn(ids, self.num_clusters)


def _sort_graph(num_clusters: int) -> onnx.ModelProto:
    import io
    import warnings
    ids = torch.zeros(2, 10, dtype=torch.int64)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_SortOnly(num_clusters), (ids,), buf, dynamo=False, opset_version=17,
                          input_names=["ids"], output_names=["perm", "inverse"],
                          dynamic_axes={"ids": {0: "b", 1: "n"}, "perm": {0: "b", 1: "n"},
                                        "inverse": {0: "b", 1: "n"}})
    return onnx.load_model_from_string(buf.getvalue())


@pytest.mark.parametrize("n", [1, 7, 385, 5000])
def test_counting_sort_equals_stable_argsort_with_heavy_ties(n):
    k = 8
    proto = _sort_graph(k)
    assert graph_lib.op_counts(proto)["TopK"] == 0
    sess = ort_ops.session(proto)
    rng = np.random.default_rng(n)
    ids = rng.integers(-2, 4, size=(3, n)).astype(np.int64)  # 3..4 distinct values, out-of-range too
    ids[0] = 5  # one row, all tied
    perm, inverse = sess.run(None, {"ids": ids})
    clamped = np.clip(ids, 0, k - 1)
    expected = np.argsort(clamped, axis=-1, kind="stable")
    np.testing.assert_array_equal(perm, expected)
    np.testing.assert_array_equal(np.take_along_axis(inverse, perm, -1), np.broadcast_to(np.arange(n), ids.shape))
    ref_perm, ref_inv = cluster_sort_reference(ids.astype(np.int32), k)
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(inverse, ref_inv)


def test_plugin_graph_of_the_sort_alone_runs_the_reference():
    proto = graph_lib.replace_counting_sort(_sort_graph(8))
    assert graph_lib.op_counts(proto)[graph_lib.PLUGIN_OP] == 1
    ids = np.random.default_rng(3).integers(0, 3, size=(2, 1000)).astype(np.int64)
    perm, inverse = ort_ops.session(proto).run(None, {"ids": ids})
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(perm, np.argsort(ids, axis=-1, kind="stable"))


# --------------------------------------------------------------------------- fp16
@pytest.mark.slow
def test_fp16_drift_and_cluster_ids(tiny):
    p32 = build_onnx(tiny, sort="onnx")
    p16 = build_onnx(tiny, sort="onnx", dtype="fp16")
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in p16.graph.initializer)
    assert p16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert p16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # cluster assignment stays FP32: the centroid MatMul reads float32
    inferred = onnx.shape_inference.infer_shapes(p16)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({i.name: i.data_type for i in p16.graph.initializer})
    matmul = next(n for n in p16.graph.node if n.op_type == "MatMul" and "/kmeans/" in n.name)
    assert all(types.get(name) == onnx.TensorProto.FLOAT for name in matmul.input)
    softmax = next(n for n in p16.graph.node if n.op_type == "Softmax")
    assert types[softmax.input[0]] == onnx.TensorProto.FLOAT

    ids = graph_lib.cluster_id_tensors(p16)
    assert ids == graph_lib.cluster_id_tensors(p32)
    s32 = ort_ops.session(graph_lib.add_outputs(p32, ids))
    s16 = ort_ops.session(graph_lib.add_outputs(p16, ids))
    rng = np.random.default_rng(4)
    differ = total = 0
    for h, w in [(32, 32), (64, 64), (100, 75)]:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        sr32, id32 = s32.run(None, {"lr": x})
        sr16, id16 = s16.run(None, {"lr": x})
        assert parity.drift_psnr(sr16, _torch(tiny, x)) >= 50.0
        differ += int((id16 != id32).sum())
        total += id32.size
    assert differ / total < 0.01, differ / total


def test_fp16_of_a_model_without_attention_and_of_one_whose_assignment_scope_is_gone():
    torch.manual_seed(0)
    twin = build_model("tiny", scale=2, attention="none").eval()
    x = np.random.default_rng(2).random((1, 3, 24, 20), dtype=np.float32)
    sr16 = ort_ops.session(build_onnx(twin, sort="onnx", dtype="fp16")).run(None, {"lr": x})[0]
    assert parity.drift_psnr(sr16, _torch(twin, x)) >= 50.0
    from export.errors import ExportError
    from export.precision import to_fp16
    renamed = build_onnx(build_model("tiny", scale=2).eval(), sort="onnx")
    for node in renamed.graph.node:
        node.name = node.name.replace("/kmeans/", "/assign/")
    with pytest.raises(ExportError, match="no cluster-assignment nodes"):
        to_fp16(renamed)  # an attention graph is never converted with its assignment in FP16


# --------------------------------------------------------------------------- CLI errors
def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("w") / "tiny_x2.safetensors"
    save_safetensors(tiny, path)
    return path


@pytest.mark.slow
def test_cli_exports_and_errors_are_one_line(weights, tmp_path):
    out = tmp_path / "m.onnx"
    proc = _cli("export.to_onnx", "--weights", str(weights), "--out", str(out), "--sort", "plugin", "--scale", "2")
    assert proc.returncode == 0, proc.stderr
    assert graph_lib.op_counts(onnx.load(str(out)))[graph_lib.PLUGIN_OP] == 1

    _assert_one_line_error(_cli("export.to_onnx", "--weights", str(weights), "--scale", "3",
                                "--out", str(tmp_path / "x.onnx")), "x2", "x3")
    _assert_one_line_error(_cli("export.to_onnx", "--weights", str(weights), "--opset", "9",
                                "--out", str(tmp_path / "x.onnx")), "opset 9")
    _assert_one_line_error(_cli("export.to_onnx", "--weights", str(tmp_path / "missing.safetensors")),
                           "no such weights file")
    assert not (tmp_path / "x.onnx").exists()


def _assert_skipped_named(proc, *needles):
    """Unreadable parity inputs are named and skipped; with none left, the run fails."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith(("skipped:", "error:")) for line in lines), lines
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.slow
def test_cli_parity_rejects_bad_input(weights, tmp_path):
    onnx_path = export_onnx(build_model("tiny").eval(), tmp_path / "m.onnx")
    images = tmp_path / "images"
    images.mkdir()
    np.save(images / "grey.npy", np.zeros((1, 1, 8, 8), np.float32))
    _assert_skipped_named(_cli("export.parity", "--weights", str(weights), "--onnx", str(onnx_path),
                               "--images", str(images)), "grey.npy", "4-D [N, 3, H, W]", "(1, 1, 8, 8)")
    np.save(images / "grey.npy", np.zeros((3, 8, 8), np.float32))
    _assert_skipped_named(_cli("export.parity", "--weights", str(weights), "--onnx", str(onnx_path),
                               "--images", str(images)), "grey.npy", "(3, 8, 8)")
    _assert_one_line_error(_cli("export.parity", "--weights", str(tmp_path / "nope.pt"), "--onnx",
                                str(onnx_path), "--images", str(images)), "no such weights file")


# --------------------------------------------------------------------------- the realtime preset
def test_realtime_preset_exports_and_matches_pytorch_in_ort():
    torch.manual_seed(0)
    model = build_model("realtime", scale=2).eval()
    sessions = {dtype: ort_ops.session(build_onnx(model, sort="onnx", dtype=dtype)) for dtype in ("fp32", "fp16")}
    rng = np.random.default_rng(7)
    for h, w in [(20, 24), (72, 60)]:  # one window block, and 4320 positions (> TopK's 3840)
        x = rng.random((2, 3, h, w), dtype=np.float32)
        ref = _torch(model, x)
        sr32 = sessions["fp32"].run(None, {"lr": x})[0]
        assert np.abs(sr32 - ref).max() < 1e-4
        assert parity.drift_psnr(sessions["fp16"].run(None, {"lr": x})[0], ref) >= 50.0


# --------------------------------------------------------------------------- ONNX files: damage and faults
# Held-out variants of the failures the tools had with graphs (one loader, one atomic writer):
# each is one line, exit status 2, no traceback, the earlier output byte-identical, no temporary
# file left beside it.
def _run(main, argv, capsys):
    from lcoan.errors import exit_status
    status = exit_status(main, argv)  # any exception other than the tools' one-line errors escapes
    err = capsys.readouterr().err.strip()
    return status, err


def _one_line(status, err, *needles):
    assert status == 2, (status, err)
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def _no_temporaries(folder: Path):
    left = [p.name for p in folder.iterdir() if ".tmp" in p.name]
    assert not left, left


def _damaged_copies(good: Path, folder: Path) -> dict:
    """Damaged graphs of every kind, named by what is wrong with them."""
    data = good.read_bytes()
    proto = onnx.load_model_from_string(data)
    out = {"empty": b"", "text": b"name: not a graph\n" * 20, "png": (REPO / "docs").joinpath("crop_x2.png").read_bytes()[:4096]
           if (REPO / "docs" / "crop_x2.png").is_file() else bytes(range(256)) * 16,
           "random": np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()}
    for cut in (7, 1000, len(data) // 3, len(data) // 2, len(data) - 300, len(data) - 1):
        out[f"cut{cut}"] = data[:cut]
    # cuts at field boundaries inside the metadata at the end of the file still parse
    for keep in range(len(proto.metadata_props)):
        short = onnx.ModelProto()
        short.CopyFrom(proto)
        del short.metadata_props[keep:]
        prefix = short.SerializeToString()
        assert data.startswith(prefix)
        out[f"meta{keep}"] = prefix
    paths = {}
    for name, blob in out.items():
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(blob)
    paths["folder"] = folder / "dir.onnx"
    paths["folder"].mkdir()
    paths["missing"] = folder / "nothing_here.onnx"
    return paths


def test_damaged_graphs_are_one_line_naming_the_file(graphs, tmp_path):
    from lcoan.graph_io import GraphFileError, load_onnx, save_onnx
    good = tmp_path / "good.onnx"
    save_onnx(graphs["onnx"], good)
    assert load_onnx(good) == graphs["onnx"]
    for name, path in _damaged_copies(good, tmp_path).items():
        with pytest.raises(GraphFileError) as info:
            load_onnx(path)
        msg = str(info.value)
        assert str(path) in msg and "\n" not in msg, (name, msg)
    # external data: missing, and shorter than the graph says
    ext = tmp_path / "ext" / "g.onnx"
    save_onnx(graphs["onnx"], ext, external_data=True)
    (data,) = [p for p in ext.parent.iterdir() if p.suffix == ".data"]
    loaded, want = load_onnx(ext), load_onnx(good)
    assert loaded.graph.node == want.graph.node
    for a, b in zip(loaded.graph.initializer, want.graph.initializer):
        assert np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b)), a.name
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(GraphFileError, match="truncated"):
        load_onnx(ext)
    data.unlink()
    with pytest.raises(GraphFileError, match="external data file .* is missing"):
        load_onnx(ext)


def test_tools_given_damaged_graphs_say_so_in_one_line(graphs, weights, tmp_path, capsys):
    from calib.__main__ import main as calib_main
    from lcoan.graph_io import save_onnx
    from pipeline.to_trt import main as trt_main
    good = tmp_path / "good.onnx"
    save_onnx(graphs["onnx"], good)
    (tmp_path / "bad").mkdir()
    damaged = _damaged_copies(good, tmp_path / "bad")
    images = shared_path("data", "benchmark", "Set5", "LR_bicubic", "X2")
    for name in ("empty", "cut1000", "random", "meta2", "missing"):
        path = str(damaged[name])
        _one_line(*_run(parity.main, ["--onnx", path, "--weights", str(weights), "--no-progress"], capsys), path)
        out = tmp_path / f"{name}_int8.onnx"
        _one_line(*_run(calib_main, ["--onnx", path, "--images", str(images), "--out", str(out)], capsys), path)
        assert not out.exists()
        try:
            from engine.trt import import_trt
            import_trt()
        except Exception:  # noqa: BLE001 - no TensorRT: the build command's own test skips too
            pass
        else:
            _one_line(*_run(trt_main, ["--onnx", path, "--fp32", "--out", str(tmp_path / "e.engine")], capsys), path)
    pytest.importorskip("onnxruntime")
    from app.backends import OrtBackend
    from lcoan.graph_io import GraphFileError
    for name in ("empty", "cut7", "text"):
        with pytest.raises(GraphFileError, match=str(damaged[name])):
            OrtBackend(str(damaged[name]), device="cpu")
    _no_temporaries(tmp_path)


def test_export_refuses_to_overwrite_its_weights(weights, tmp_path, capsys):
    from export.to_onnx import main
    link = tmp_path / "alias.safetensors"
    link.symlink_to(weights)
    hard = tmp_path / "hard.safetensors"
    os.link(weights, hard)
    before = weights.read_bytes()
    for out in (weights, weights.parent / "." / weights.name, link, hard):
        _one_line(*_run(main, ["--weights", str(weights), "--out", str(out)], capsys), "refusing to overwrite")
    _one_line(*_run(main, ["--weights", str(link), "--out", str(weights)], capsys), "refusing to overwrite")
    assert weights.read_bytes() == before and hard.read_bytes() == before


def test_export_to_a_folder_it_cannot_write_is_one_line(weights, tmp_path, capsys):
    from export.to_onnx import main
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _one_line(*_run(main, ["--weights", str(weights), "--out", str(blocker / "sub" / "g.onnx")], capsys),
              "cannot create the output folder")
    _one_line(*_run(main, ["--weights", str(weights), "--out", str(tmp_path)], capsys), "is a folder")
    # a folder without write permission (as root, run the check as nobody: root writes anywhere)
    import tempfile
    locked = Path(tempfile.mkdtemp(prefix="lcoan-ro-"))
    try:
        os.chmod(locked, 0o555)
        for out in (locked / "g.onnx", locked / "new_sub" / "g.onnx"):
            if os.geteuid() == 0:
                os.seteuid(65534)
            try:
                status, err = _run(main, ["--weights", str(weights), "--out", str(out)], capsys)
            finally:
                if os.getuid() == 0:
                    os.seteuid(0)
            _one_line(status, err, str(out.parent if out.parent != locked else out), "ermission denied")
        assert not list(locked.iterdir())
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(locked)


def test_file_size_limit_leaves_the_earlier_graph_byte_identical(graphs, weights, tmp_path, capsys):
    import resource

    from export.to_onnx import main
    from lcoan.graph_io import save_onnx
    from lcoan.safeio import OutputError
    out = tmp_path / "new" / "g.onnx"  # a missing folder is created
    status, err = _run(main, ["--weights", str(weights), "--out", str(out), "--io", "i420", "--range", "full"], capsys)
    assert status == 0, err
    from lcoan.graph_io import read_io
    assert (read_io(out).mode, read_io(out).range) == ("i420", "full")
    before = out.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 3, hard))
        # checked before the weights are loaded: the estimate (the weights' size) is over the limit
        _one_line(*_run(main, ["--weights", str(weights), "--out", str(out)], capsys), "file size limit")
        # and where the estimate passes but the write does not: the write fails, atomically
        with pytest.raises(OutputError, match="file size limit") as info:
            save_onnx(graphs["plugin"], out)
        assert "\n" not in str(info.value)
        with pytest.raises(OutputError, match="file size limit"):
            save_onnx(graphs["onnx"], out, external_data=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["g.onnx"]


def test_a_killed_write_leaves_nothing_after_the_next_run(graphs, tmp_path):
    from lcoan.graph_io import save_onnx
    out = tmp_path / "g.onnx"
    save_onnx(graphs["onnx"], out)
    # what a SIGKILL during a write leaves: a hidden temporary beside the graph (and its data file),
    # which no live process holds; a writer holds its own under flock until the rename
    import fcntl
    stale = [tmp_path / ".g.onnx.k1ll3d.tmp.onnx", tmp_path / ".g.onnx.0123456789ab.data.x9.tmp.data"]
    for p in stale:
        p.write_bytes(b"partial")
    running = tmp_path / ".g.onnx.st1ll.tmp.onnx"  # another run, writing now: not ours to remove
    running.write_bytes(b"partial")
    other = tmp_path / ".h.onnx.abc.tmp.onnx"      # another file's temporary
    other.write_bytes(b"x")
    probe = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); "
                              "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                              str(running)], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "locked"
        save_onnx(graphs["plugin"], out)
    finally:
        probe.kill()
        probe.wait()
    assert not any(p.exists() for p in stale) and running.exists() and other.exists()
    with open(running, "rb") as fh:  # its writer gone, the next write takes it for stale
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert onnx.load(str(out)) == graphs["plugin"]
    # external data: the graph's rename commits both files; the old data file goes after it
    save_onnx(graphs["onnx"], out, external_data=True)
    first = [p.name for p in tmp_path.iterdir() if p.suffix == ".data"]
    save_onnx(graphs["plugin"], out, external_data=True)
    second = [p.name for p in tmp_path.iterdir() if p.suffix == ".data"]
    assert len(first) == len(second) == 1 and first != second
    save_onnx(graphs["onnx"], out)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".data"]
