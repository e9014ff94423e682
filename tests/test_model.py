"""Core model: golden reproduction, LSP/CoA semantics, checkpoints, parameter counts."""
import copy
import csv
import pickle
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import shared_path
from lcoan import CheckpointError, build_model, load_model
from lcoan.checkpoint import save_checkpoint, to_official_state_dict
from lcoan.model import attention as attention_mod
from lcoan.model.lsp import ClusterCentroids
from lcoan.model import coa
from lcoan.model.coa import Workspace
from lcoan.model.lsp import gather_rows, sparse_pattern
from lcoan.model.sort import counting_sort, stable_sort


def test_golden_public_checkpoint():
    ref = shared_path("reference")
    model = load_model(ref / "official_small_x2.pt", window_size=64)
    lr = torch.from_numpy(np.load(ref / "official_small_x2_lr.npy"))
    expected = np.load(ref / "official_small_x2_sr.npy")
    with torch.no_grad():
        sr = model(lr).numpy()
    assert sr.shape == expected.shape
    assert np.abs(sr - expected).max() <= 1e-5


@pytest.mark.parametrize("scale, expected", [(2, 14_340_227), (3, 15_078_147), (4, 14_930_563)])
def test_paper_parameter_count_matches_public_used_parameters(scale, expected):
    assert build_model("paper", scale=scale).num_parameters() == expected


# ----------------------------------------------------------------------------- sort
@pytest.mark.parametrize("sort_fn", [stable_sort, counting_sort])
def test_sort_is_stable_and_inverse_round_trips(sort_fn):
    g = torch.Generator().manual_seed(1)
    for batch, length, k in [(1, 1, 1), (2, 37, 3), (3, 500, 16), (2, 4096, 128)]:
        ids = torch.randint(0, k, (batch, length), generator=g)
        perm, inverse = sort_fn(ids, k)
        for b in range(batch):
            expected = np.argsort(ids[b].numpy(), kind="stable")
            assert np.array_equal(perm[b].numpy(), expected)
        x = torch.randn(batch, length, 5, generator=g)
        assert torch.equal(gather_rows(gather_rows(x, perm), inverse), x)
        sorted_ids = ids.gather(1, perm)
        assert (sorted_ids[:, 1:] >= sorted_ids[:, :-1]).all()
        same = sorted_ids[:, 1:] == sorted_ids[:, :-1]
        assert (perm[:, 1:] > perm[:, :-1])[same].all(), "ties must keep raster order"


# ----------------------------------------------------------------------------- LSP vs brute force
def brute_force_sparse_attention(q, values, ids, window):
    """Dense attention with an explicit who-sees-whom count matrix built from the sort.

    Written from the prose semantics, independently of lcoan.model.lsp.
    """
    length = q.shape[0]
    order = list(np.argsort(ids.numpy(), kind="stable"))
    n_windows = -(-length // window)
    pad = n_windows * window - length
    padded = order + [order[(t - pad) % length] for t in range(pad)]  # repeat the last rows
    slot_of = {pos: s for s, pos in enumerate(order)}
    sees = torch.zeros(length, length, dtype=torch.float64)
    for i in range(length):
        w = slot_of[i] // window
        for nb in (w, (w - 1) % n_windows, (w + 1) % n_windows):
            for j in padded[nb * window:(nb + 1) * window]:
                sees[i, j] += 1
    keys = F.normalize(q.double(), dim=-1, eps=5e-5)
    logits = q.double() @ keys.t()
    logits = logits - logits.max(dim=1, keepdim=True).values
    weights = sees * torch.exp(logits)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights @ values.double()).float()


@pytest.mark.parametrize("length, window", [(1, 8), (5, 8), (8, 8), (13, 8), (40, 8), (64, 16), (70, 16), (3, 16)])
def test_sparse_attention_equals_masked_dense_reference(length, window):
    g = torch.Generator().manual_seed(length)
    k, d, c = 4, 6, 5
    q = torch.randn(2, length, d, generator=g)
    values = torch.randn(2, length, c, generator=g)
    ids = torch.randint(0, k, (2, length), generator=g)
    perm, inverse = stable_sort(ids, k)
    out = sparse_pattern(q, perm, inverse, window).apply(values)
    for b in range(2):
        expected = brute_force_sparse_attention(q[b], values[b], ids[b], window)
        torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-5)


def test_batch_elements_get_their_own_pattern():
    model = build_model("tiny").eval()
    x = torch.rand(3, 3, 9, 11)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["none", "nla", "lsp", "nla_shared", "lcoa"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 5), (16, 20)])
def test_any_size_and_every_attention_mode(mode, hw):
    model = build_model("tiny", scale=3, attention=mode).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 3, hw[0] * 3, hw[1] * 3)
    assert torch.isfinite(out).all()


def test_nla_shared_matches_dense_softmax():
    torch.manual_seed(3)
    model = build_model("tiny", attention="nla_shared").eval()
    producer = model.groups[0].attention
    x = torch.randn(1, 16, 6, 5)
    out, pattern = producer(x, None)
    rows = producer.match_conv(x).flatten(2).transpose(1, 2)[0]
    weights = torch.softmax(rows @ F.normalize(rows, dim=-1, eps=5e-5).t(), dim=-1)
    torch.testing.assert_close(pattern.weights[0], weights, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- CoA
def count_calls(model, monkeypatch):
    calls = {"sort": 0, "kmeans": 0}

    def counting(ids, k):
        calls["sort"] += 1
        return stable_sort(ids, k)

    model.set_sort(counting)
    original = ClusterCentroids.forward

    def counted_forward(self, features):
        calls["kmeans"] += 1
        return original(self, features)

    monkeypatch.setattr(ClusterCentroids, "forward", counted_forward)
    return calls


@pytest.mark.parametrize("mode, expected", [("lcoa", 1), ("lsp", 3)])
def test_later_groups_run_no_sort_and_no_kmeans(mode, expected, monkeypatch):
    model = build_model("tiny", attention=mode).eval()
    assert model.config.n_groups == 3
    calls = count_calls(model, monkeypatch)
    with torch.no_grad():
        model(torch.rand(1, 3, 12, 12))
    assert calls == {"sort": expected, "kmeans": expected}
    if mode == "lcoa":
        later = [g.attention for g in model.groups[1:]]
        assert all(type(a) is attention_mod.CollaborativeAttention for a in later)
        assert not any(hasattr(a, "match_conv") or hasattr(a, "kmeans") for a in later)


def test_gradient_reaches_group1_match_conv_through_last_group_only():
    model = build_model("tiny").train()
    model(torch.rand(2, 3, 12, 12))  # initialise the centroids
    producer, last = model.groups[0].attention, model.groups[-1].attention
    features = torch.randn(2, 16, 12, 12)
    _, pattern = producer(features, None)
    out, _ = last(torch.randn(2, 16, 12, 12), pattern)  # the only path back is A_s
    out.square().sum().backward()
    grad = producer.match_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not pattern.wrapped_index.requires_grad and not pattern.inverse.requires_grad


# ----------------------------------------------------------------------------- k-means EMA (Eq. 10)
def test_ema_update_matches_eq10_by_hand_and_eval_changes_nothing():
    torch.manual_seed(5)
    km = ClusterCentroids(num_clusters=6, dim=4, decay=0.999)
    features = torch.randn(2, 30, 4)
    km.train()
    km(features)  # first training batch: initialisation from the batch
    assert bool(km.initialized)
    mu = km.centroids.clone()
    batch = torch.randn(2, 25, 4)
    ids = km(batch)
    unit = F.normalize(batch.reshape(-1, 4), dim=-1)
    flat_ids = (unit @ mu.t()).argmax(-1)
    assert torch.equal(ids.reshape(-1), flat_ids)
    expected = mu.clone()
    for k in range(6):
        members = unit[flat_ids == k]
        if len(members):
            expected[k] = 0.999 * mu[k] + 0.001 * F.normalize(members.sum(0), dim=0)
    torch.testing.assert_close(km.centroids, expected, atol=1e-7, rtol=0)
    assert not torch.equal(km.centroids, mu)

    km.eval()
    before = km.centroids.clone()
    km(torch.randn(2, 25, 4))
    assert torch.equal(km.centroids, before)


def test_decay_zero_freezes_centroids_and_eval_never_initialises():
    km = ClusterCentroids(4, 3, decay=0.0).train()
    km(torch.randn(1, 20, 3))
    frozen = km.centroids.clone()
    km(torch.randn(1, 20, 3))
    assert torch.equal(km.centroids, frozen)
    fresh = ClusterCentroids(4, 3).eval()
    start = fresh.centroids.clone()
    fresh(torch.randn(1, 20, 3))
    assert not bool(fresh.initialized) and torch.equal(fresh.centroids, start)


# ----------------------------------------------------------------------------- checkpoints
def test_official_keys_round_trip(tmp_path):
    keys_file = shared_path("reference", "official_lcoan_x2_state_dict_keys.tsv")
    official = {}
    with open(keys_file) as fh:
        for row in csv.reader(fh, delimiter="\t"):
            official[row[0]] = tuple(int(s) for s in row[1].strip("()").split(",") if s.strip())
    model = build_model("paper", scale=2)
    exported = to_official_state_dict(model)
    unused = {k for k in official if k in ("a",) or "mean" in k and "kmeans" not in k
              or (k.startswith("body.") and not k.startswith("body.0.") and ("conv_match" in k or "kmeans" in k))}
    assert set(exported) == set(official) - unused
    for key, value in exported.items():
        assert tuple(value.shape) == official[key], key

    tiny = build_model("tiny").eval()
    path = tmp_path / "public.pt"
    torch.save(to_official_state_dict(tiny), path)
    loaded = load_model(path, window_size=tiny.config.window_size)
    assert loaded.config.n_feats == 16 and loaded.config.n_groups == 3 and loaded.config.n_clusters == 8
    x = torch.rand(1, 3, 10, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny(x))


def test_wrong_shape_names_the_key(tmp_path):
    state = to_official_state_dict(build_model("tiny"))
    state["body.1.m_conv.0.weight"] = torch.zeros(16, 16, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"groups\.1\.conv\.weight.*shape"):
        load_model(path)


def test_unusable_files_give_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_model(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    model = build_model("tiny", scale=2)
    own = tmp_path / "own.pt"
    save_checkpoint(own, model)
    with pytest.raises(CheckpointError, match="x2, not x4"):
        load_model(own, scale=4)
    assert load_model(own).config.scale == 2


# ----------------------------------------------------------------------------- optimised LCoA vs the reference
def reference_sparse_attention(queries, values, perm, inverse, window):
    """The public model's literal form: pad, three window copies [current, previous, next],
    logsumexp softmax, scatter back. Kept here as the reference the fast path must equal."""
    length = queries.shape[1]
    n_windows = -(-length // window)
    j = torch.arange(n_windows * window)
    slots = torch.where(j < length, j, (length - 1) - torch.remainder(n_windows * window - 1 - j, length))
    index = perm[:, slots]

    def windows(rows):
        g = rows.gather(1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))
        return g.reshape(rows.shape[0], n_windows, window, rows.shape[-1])

    def adjacent(w):
        return torch.cat([w, w.roll(1, dims=1), w.roll(-1, dims=1)], dim=2)

    q = windows(queries)
    k = adjacent(F.normalize(q, p=2, dim=-1, eps=5e-5))
    scores = q @ k.transpose(-1, -2)
    weights = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))
    mixed = (weights @ adjacent(windows(values))).reshape(values.shape[0], -1, values.shape[-1])
    return mixed.gather(1, inverse.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


@pytest.mark.parametrize("batch, length, window", [
    (1, 5, 16),      # below one window: cyclic padding
    (2, 37, 16),     # padding, batch > 1
    (3, 4100, 64),   # above TensorRT's 3840 TopK cap, several window blocks
    (1, 6000, 128),  # many blocks of the block-wise path
])
@pytest.mark.parametrize("grad", [False, True])
def test_fast_sparse_attention_equals_reference(batch, length, window, grad):
    g = torch.Generator().manual_seed(length)
    queries = torch.randn(batch, length, 8, generator=g) * 3
    values = torch.randn(batch, length, 12, generator=g)
    ids = torch.randint(0, 7, (batch, length), generator=g)
    perm, inverse = stable_sort(ids, 7)
    expected = reference_sparse_attention(queries, values, perm, inverse, window)
    workspace = Workspace()
    with torch.set_grad_enabled(grad):
        out = sparse_pattern(queries.requires_grad_(grad), perm, inverse, window, workspace=workspace).apply(values)
    torch.testing.assert_close(out.detach(), expected, atol=1e-5, rtol=1e-5)
    assert bool(workspace.names()) == (not grad), "the workspace serves inference, never autograd"
    if grad:
        out.square().sum().backward()
        assert torch.isfinite(queries.grad).all() and queries.grad.abs().sum() > 0


def test_counting_sort_int32_form_equals_stable_argsort_at_scale():
    ids = torch.randint(0, 128, (2, 129_600), generator=torch.Generator().manual_seed(0))  # 270 x 480
    perm, inverse = counting_sort(ids, 128)
    for b in range(2):
        assert np.array_equal(perm[b].numpy(), np.argsort(ids[b].numpy(), kind="stable"))
    assert torch.equal(perm.gather(1, inverse), torch.arange(ids.shape[1]).expand_as(ids))


# ----------------------------------------------------------------------------- the realtime preset
def test_realtime_preset_fits_the_jetson_flop_budget():
    from benchmarks.flops import mflops_per_pixel
    model = build_model("realtime", scale=2)
    assert model.config.attention == "lcoa" and model.config.n_clusters > 1  # LSP + CoA kept
    assert mflops_per_pixel(model, 48, 64) <= 0.8  # MFLOP per LR pixel, attention included (issue budget)
    assert mflops_per_pixel(build_model("edge", scale=2), 48, 64) > 0.8  # the budget does bind


@pytest.mark.parametrize("shape", [(1, 64, 270, 48), (2, 5, 37, 11), (1, 3, 2, 1)])
def test_blockwise_transposing_residual_add_equals_one_add(shape, monkeypatch):
    monkeypatch.setattr(coa, "TRANSPOSE_BLOCK_BYTES", 4096)  # many blocks, a ragged last one
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    batch, channels, height, width = shape
    rows = torch.rand(batch, height * width, channels, generator=g)
    view = coa._image(rows, x)
    assert not view.is_contiguous()
    with torch.no_grad():
        assert torch.equal(coa._add_scaled(x, view, 0.1), torch.add(x, view, alpha=0.1))
        nhwc = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(coa._add_scaled(nhwc, view, 0.1), torch.add(x, view, alpha=0.1))
    assert torch.equal(coa._add_scaled(x, view, 0.1), torch.add(x, view, alpha=0.1))  # autograd on


# ----------------------------------------------------------------------------- inference workspace
def _fresh_lcoa(preset: str = "tiny"):
    torch.manual_seed(0)
    return build_model(preset, scale=2).eval()


def test_workspace_reuse_across_sizes_batches_and_layouts_changes_nothing():
    model = _fresh_lcoa()
    g = torch.Generator().manual_seed(3)
    inputs = [torch.rand(b, 3, h, w, generator=g) for b, h, w in [(1, 40, 50), (2, 12, 9), (1, 40, 50), (3, 33, 21)]]
    with torch.no_grad():
        fresh = [copy.deepcopy(model)(x) for x in inputs]      # each on an empty workspace
        for layout in (torch.contiguous_format, torch.channels_last):
            reused = model.to(memory_format=layout)
            for _ in range(2):                                   # buffers grow, shrink, are reused
                for x, expected in zip(inputs, fresh):
                    torch.testing.assert_close(reused(x.contiguous(memory_format=layout)), expected,
                                               atol=1e-5, rtol=1e-5)
    workspace = model.groups[0].attention.workspace
    assert workspace.names() >= {"weights", "mixed", "values"}


def test_workspace_is_per_thread_and_not_copied():
    model = _fresh_lcoa()
    g = torch.Generator().manual_seed(4)
    inputs = [torch.rand(1, 3, 30 + 7 * i, 41, generator=g) for i in range(4)]
    with torch.no_grad():
        expected = [copy.deepcopy(model)(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        with torch.no_grad():
            for _ in range(3):
                results[i] = model(inputs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(expected):
        torch.testing.assert_close(results[i], x, atol=1e-5, rtol=1e-5)
    assert not model.groups[0].attention.workspace.names(), "the main thread ran nothing"
    with torch.no_grad():
        model(inputs[0])
    assert model.groups[0].attention.workspace.names()
    assert not copy.deepcopy(model).groups[0].attention.workspace.names()
    clone = pickle.loads(pickle.dumps(model))  # copies and pickles carry no buffers
    assert not clone.groups[0].attention.workspace.names()
    assert len(pickle.dumps(model)) < 2 * len(pickle.dumps(copy.deepcopy(model)))


def test_workspace_serves_inference_mode_and_no_grad_in_turn():
    model = _fresh_lcoa()
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        expected = copy.deepcopy(model)(x)
    for mode in (torch.inference_mode, torch.no_grad, torch.inference_mode):
        with mode():
            torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 on CPU, as before
        low = model(x)
    assert torch.isfinite(low).all() and (low.float() - expected).abs().max() < 0.1


def test_training_forward_leaves_the_workspace_alone():
    model = _fresh_lcoa().train()
    model(torch.rand(2, 3, 24, 24)).square().mean().backward()
    assert not model.groups[0].attention.workspace.names()


@pytest.mark.parametrize("batch, layout", [(1, torch.contiguous_format), (1, torch.channels_last),
                                           (2, torch.contiguous_format), (2, torch.channels_last)])
@pytest.mark.parametrize("kernels", ["native", "torch ops"])
def test_inference_path_equals_the_autograd_path(batch, layout, kernels, monkeypatch):
    """No grad on CPU, the producer applies its weights to its own values block by block and each
    group adds its gathered rows to X block by block (native kernels or PyTorch ops); with autograd
    none of that runs."""
    monkeypatch.setenv("LCOAN_NATIVE", "1" if kernels == "native" else "0")
    monkeypatch.setattr(coa, "GATHER_BLOCK_BYTES", 1000)  # many blocks, a ragged last one
    torch.manual_seed(0)
    model = build_model("tiny", scale=2).eval().to(memory_format=layout)
    x = torch.rand(batch, 3, 37, 23, generator=torch.Generator().manual_seed(batch)).contiguous(memory_format=layout)
    with torch.enable_grad():
        expected = model(x.clone().requires_grad_()).detach()
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernels", ["native", "torch ops"])
def test_producer_premix_and_gathered_add_equal_the_plain_apply(kernels, monkeypatch):
    monkeypatch.setenv("LCOAN_NATIVE", "1" if kernels == "native" else "0")
    monkeypatch.setattr(coa, "GATHER_BLOCK_BYTES", 700)
    g = torch.Generator().manual_seed(5)
    queries, values = torch.randn(1, 300, 8, generator=g), torch.randn(1, 300, 12, generator=g)
    perm, inverse = stable_sort(torch.randint(0, 5, (1, 300), generator=g), 5)
    with torch.no_grad():
        plain = sparse_pattern(queries, perm, inverse, 16).apply(values)
        pattern = sparse_pattern(queries, perm, inverse, 16, workspace=Workspace(), values=values)
        assert pattern.premixed is not None and pattern.premixed[0] is values
        other = values + 1  # a different tensor is mixed afresh, not served the producer's rows
        torch.testing.assert_close(pattern.apply(other), plain + 1, atol=1e-5, rtol=1e-5)
        x = torch.randn(1, 12, 20, 15, generator=g)
        for layout in (torch.contiguous_format, torch.channels_last):
            pattern = sparse_pattern(queries, perm, inverse, 16, workspace=Workspace(), values=values)
            out = pattern.add_applied(values, x.contiguous(memory_format=layout), 0.1)
            assert pattern.premixed is None, "the producer's rows are used once"
            assert out.is_contiguous(memory_format=layout)
            torch.testing.assert_close(out, x + 0.1 * coa._image(plain, x), atol=1e-6, rtol=1e-6)


def test_cosine_score_sharpens_the_weights_learns_its_temperature_and_exports(tmp_path):
    """score="cosine": unit queries times a learned temperature (lsp.SCORES). At initialisation its
    weights are sharper than the raw score's; the temperature gets a gradient; the ONNX graph
    equals PyTorch in ORT; a checkpoint reloads with the field; "raw" state dicts are unchanged."""
    from export import ort_ops
    from export.to_onnx import build_onnx
    from lcoan.checkpoint import save_safetensors
    from lcoan.model.lsp import LearnableSparseAttention

    def entropy(model, x):
        producer = next(m for m in model.modules() if isinstance(m, LearnableSparseAttention))
        pattern = producer.compute_pattern(x)
        w = pattern.weights.double()
        return float((-(w * w.clamp_min(1e-12).log()).sum(-1)).mean() / np.log(w.shape[-1]))

    torch.manual_seed(0)
    raw, cos = build_model("tiny", scale=2), build_model("tiny", scale=2, score="cosine")
    cos.load_state_dict(raw.state_dict(), strict=False)         # same weights but the temperature
    assert set(cos.state_dict()) - set(raw.state_dict()) == {"groups.0.attention.log_temperature"}
    feats = torch.randn(1, 16, 12, 14)
    with torch.no_grad():
        assert entropy(cos.eval(), feats) < entropy(raw.eval(), feats) - 0.05
    cos.train()
    cos(torch.rand(2, 3, 16, 16)).mean().backward()
    assert cos.groups[0].attention.log_temperature.grad.abs() > 0
    cos.eval()
    with pytest.raises(ValueError, match="score must be one of"):
        build_model("tiny", score="dot")

    x = np.random.default_rng(1).random((1, 3, 20, 22), dtype=np.float32)
    with torch.no_grad():
        ref = cos(torch.from_numpy(x)).numpy()
    got = ort_ops.session(build_onnx(cos, sort="onnx")).run(None, {"lr": x})[0]
    assert np.abs(got - ref).max() < 1e-4
    save_safetensors(cos, tmp_path / "cos.safetensors")
    again = load_model(tmp_path / "cos.safetensors")
    assert again.config.score == "cosine"
    with torch.no_grad():
        assert torch.allclose(again(torch.from_numpy(x)), torch.from_numpy(ref), atol=1e-5)
