"""Structural reparameterisation (lcoan/model/reparam.py): the training form and its collapse."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from lcoan import build_model, load_model
from lcoan.checkpoint import save_checkpoint, save_safetensors
from lcoan.data.imageio import read_image
from lcoan.model.reparam import BRANCHES, RepConv3x3, collapse, parse_branches

ALL = ",".join(BRANCHES)


def _real_batch(channels: int, size: int = 48) -> torch.Tensor:
    """A crop of a real image, its RGB repeated up to ``channels`` (features look like images)."""
    img = read_image(shared_path("data", "benchmark", "Set14", "HR", "baboon.png"))[:size, :size]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    return x.repeat((channels + 2) // 3, 1, 1)[:channels].unsqueeze(0)


def _perturb(module: torch.nn.Module, std: float = 0.05) -> None:
    """Random non-zero values everywhere: freshly initialised scales (1e-3) would hide a wrong fold."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("cin,cout", [(16, 16), (3, 16), (16, 64)])
def test_each_branch_collapses_to_one_conv_on_real_images(branch, cin, cout):
    torch.manual_seed(1)
    rep = RepConv3x3(cin, cout, (branch,)).eval()
    _perturb(rep)
    x = _real_batch(cin)
    with torch.no_grad():
        want = rep(x)
        got = rep.fuse()(x)
    # the border rows and columns included: that is where a zero-padded 1x1 output would differ
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    if branch == "identity" and cin != cout:
        assert not rep.identity


def test_every_branch_differs_from_the_plain_conv():
    """Each branch contributes: collapsing without it would not reproduce the training form."""
    torch.manual_seed(2)
    x = _real_batch(16)
    for branch in BRANCHES:
        rep = RepConv3x3(16, 16, (branch,)).eval()
        _perturb(rep)
        with torch.no_grad():
            assert (rep(x) - rep.conv3x3(x)).abs().max() > 1e-3, branch


def test_whole_model_collapse_is_exact_and_keeps_flops_and_keys():
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    plain = build_model("tiny", scale=2, attention="none").eval()
    rep = build_model("tiny", scale=2, attention="none", reparam=ALL).eval()
    _perturb(rep, 0.02)
    x = _real_batch(3, 40)
    with torch.no_grad():
        want = rep(x)
        n = collapse(rep)
        rep.config.reparam = ""
        got = rep(x)
    assert n == len([m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)])
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert {k: v.shape for k, v in rep.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}

    def flops(m):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            m(x)
        return counter.get_total_flops()
    assert flops(rep) == flops(plain)


def test_both_checkpoint_forms_load_as_the_plain_network(tmp_path):
    torch.manual_seed(0)
    rep = build_model("tiny", scale=2, reparam="1x1,identity,sobel").eval()
    _perturb(rep, 0.02)
    x = torch.rand(1, 3, 24, 28)
    with torch.no_grad():
        want = rep(x)
    save_checkpoint(tmp_path / "last.pt", rep, step=1)                  # training form
    save_safetensors(rep, tmp_path / "train_form.safetensors")
    collapsed = load_model(tmp_path / "train_form.safetensors")
    save_safetensors(collapsed, tmp_path / "plain.safetensors")         # deployment form
    for path in ("last.pt", "train_form.safetensors", "plain.safetensors"):
        model = load_model(tmp_path / path)
        assert model.config.reparam == ""
        assert not any(isinstance(m, RepConv3x3) for m in model.modules())
        with torch.no_grad():
            assert torch.allclose(model(x), want, atol=1e-5, rtol=0), path


def test_onnx_graph_of_a_collapsed_model_equals_the_plain_presets(tmp_path):
    from export.to_onnx import build_onnx
    torch.manual_seed(0)
    plain = build_onnx(build_model("tiny", scale=2).eval())
    rep = build_onnx(build_model("tiny", scale=2, reparam=ALL).eval())    # export collapses it
    assert [n.op_type for n in rep.graph.node] == [n.op_type for n in plain.graph.node]
    assert sorted((i.name, tuple(i.dims)) for i in rep.graph.initializer) == \
        sorted((i.name, tuple(i.dims)) for i in plain.graph.initializer)


def test_unknown_branch_is_one_clear_error():
    with pytest.raises(ValueError, match="reparam branch 'sobol'"):
        parse_branches("1x1,sobol")
    with pytest.raises(ValueError, match="reparam branch"):
        build_model("tiny", reparam="3x3x3")


def test_a_checkpoint_written_before_reparam_existed_still_resumes(tmp_path):
    """Checkpoints from before the ``reparam`` field have no such key; they are plain-conv runs."""
    from lcoan.train import check_resume_config
    model = build_model("tiny", scale=2)
    saved = {k: v for k, v in model.config.to_dict().items() if k != "reparam"}
    check_resume_config(tmp_path / "last.pt", saved, {}, model, "tiny")            # no error
    with pytest.raises(Exception, match="reparam"):
        check_resume_config(tmp_path / "last.pt", saved, {}, build_model("tiny", reparam="1x1"), "tiny")
