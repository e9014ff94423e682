"""Trainer: bit-exact resume, DDP == single process, crash-safe checkpoints, a real short run."""
import os
import socket
import subprocess
import sys
import zipfile

import pytest
import torch
import yaml

from conftest import REPO, shared_path
from lcoan import CheckpointError, build_model, load_model
from lcoan.checkpoint import read_checkpoint, save_checkpoint
from lcoan.train import ConfigError, StepBatches, init_from, load_config, main, train


def tiny_config(tmp_path, name, **train_overrides):
    data_root = shared_path("data")
    cfg = load_config(REPO / "configs" / "tiny_x2_291.yaml", [
        f"data.root={data_root}", "data.train=[benchmark/Set5/HR]", "data.patch=16",
        "data.workers=0", "data.val=null", f"train.out={tmp_path / name}", "train.batch_size=4",
        "train.steps=8", "train.ckpt_every=3", "train.threads=1",
    ])
    cfg["train"].update(train_overrides)
    return cfg


def final_state(path):
    return read_checkpoint(path)[1]


def test_set_overrides_nested_keys_without_touching_defaults():
    cfg = load_config(None, ["train.steps=7", "model.attention=none", "data.train=[a, b]"])
    assert cfg["train"]["steps"] == 7 and cfg["model"]["attention"] == "none"
    assert cfg["data"]["train"] == ["a", "b"]
    assert load_config(None)["train"]["steps"] != 7


def test_step_batches_are_a_function_of_the_step():
    full = StepBatches(50, 8, seed=3, start=0, stop=20)
    resumed = StepBatches(50, 8, seed=3, start=13, stop=20)
    assert list(full)[13:] == list(resumed)
    halves = [StepBatches(50, 8, 3, 0, 20, rank=r, world=2) for r in (0, 1)]
    for step in range(20):
        assert halves[0].batch_for_step(step) + halves[1].batch_for_step(step) == full.batch_for_step(step)


def test_killed_and_resumed_run_is_bit_exact(tmp_path):
    uninterrupted = train(tiny_config(tmp_path, "a"))
    cfg = tiny_config(tmp_path, "b")
    train(cfg, stop_after=5)  # "killed" at step 5; the last checkpoint is from step 3
    last = tmp_path / "b" / "last.pt"
    assert read_checkpoint(last)[2]["step"] == 3
    resumed = train(cfg, resume=str(last))
    a, b = final_state(uninterrupted), final_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_equal_single_process(tmp_path):
    single = train(tiny_config(tmp_path, "single", steps=4, ckpt_every=4))
    cfg = tiny_config(tmp_path, "ddp", steps=4, ckpt_every=4)
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "lcoan.train", "--config", str(cfg_file)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = final_state(single), final_state(tmp_path / "ddp" / "final.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = build_model("tiny")
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, step=1)
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, build_model("tiny"), step=2)
    assert path.read_bytes() == before
    assert read_checkpoint(path)[2]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temporary files left behind"


def test_corrupt_checkpoint_gives_one_line_error(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError):
        load_model(bad)
    code = main(["--config", str(REPO / "configs" / "tiny_x2_291.yaml"), "--set", f"train.out={tmp_path}",
                 "--resume", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(bad) in err and len(err.splitlines()) == 1


def test_damaged_zip_member_is_refused_before_torch_reads_it(tmp_path):
    # torch's C++ zip reader reports damage by throwing across native code; the CRC check in
    # Python refuses the file first, with the file's name
    path = tmp_path / "last.pt"
    save_checkpoint(path, build_model("tiny"), step=1)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # a tensor's storage
    off = info.header_offset  # local header: 30 bytes, then name and extra of the lengths at 26 and 28
    start = off + 30 + int.from_bytes(data[off + 26:off + 28], "little") + int.from_bytes(data[off + 28:off + 30], "little")
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC check") as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_weight_ema_is_what_gets_released(tmp_path):
    final = train(tiny_config(tmp_path, "ema", steps=4, ckpt_every=4, weight_ema=0.5))
    raw = read_checkpoint(tmp_path / "ema" / "last.pt")[2]
    released, trained = final_state(final), raw["model"]
    averaged = {k[len("module."):]: v for k, v in raw["ema_model"].items() if k.startswith("module.")}
    assert all(torch.equal(released[k], averaged[k]) for k in released)
    assert any(not torch.equal(released[k], trained[k]) for k in released if k.endswith("weight"))


def test_x4_initialised_from_x2_except_upsampler(tmp_path):
    x2 = build_model("tiny", scale=2)
    save_checkpoint(tmp_path / "x2.pt", x2)
    x4 = build_model("tiny", scale=4)
    init_from(x4, tmp_path / "x2.pt")
    for key, value in x4.state_dict().items():
        if not key.startswith("upsampler."):
            assert torch.equal(value, x2.state_dict()[key]), key
    assert x4.state_dict()["upsampler.2.weight"].shape == (64, 16, 3, 3)


def test_second_stage_starts_from_every_weight_of_the_same_scale(tmp_path):
    first = build_model("tiny", scale=2)
    with torch.no_grad():
        first.upsampler[0].weight.add_(1.0)  # not what a fresh model draws
    save_checkpoint(tmp_path / "first.pt", first)
    second = build_model("tiny", scale=2)
    init_from(second, tmp_path / "first.pt")
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in second.state_dict().items())


def test_mse_stage_trains_and_an_unknown_loss_names_the_choices(tmp_path):
    final = train(tiny_config(tmp_path, "mse", loss="mse", steps=2, ckpt_every=2))
    assert final.exists()
    with pytest.raises(ConfigError, match="train.loss 'l3' is not one of l1, mse"):
        load_config(None, ["train.loss=l3"])


@pytest.mark.slow
def test_short_tiny_run_lowers_loss_and_beats_bicubic(tmp_path):
    """Real images: train on T91 crops, test on a held-back Set5 image."""
    from lcoan.data import PairedDataset
    from lcoan.data.resize import imresize
    from lcoan.metrics import psnr_y

    cfg = tiny_config(tmp_path, "learn", steps=400, ckpt_every=400, batch_size=8, lr=2e-3)
    cfg["data"].update({"train": ["train/T91"], "patch": 24})
    model = build_model("tiny", scale=2)
    val = PairedDataset(shared_path("data", "benchmark", "Set5"), 2)
    idx = val.names.index("butterfly")
    lr_img, hr = val[idx]
    bicubic = torch.from_numpy(imresize(lr_img.permute(1, 2, 0).numpy(), scale=2)).permute(2, 0, 1)
    trained = load_model(train(cfg))
    with torch.no_grad():
        sr = trained(lr_img.unsqueeze(0))[0]
        first = model(lr_img.unsqueeze(0))[0]
    l1_before, l1_after = (first - hr).abs().mean(), (sr - hr).abs().mean()
    assert l1_after < 0.5 * l1_before
    assert psnr_y(sr, hr, shave=2) > psnr_y(bicubic, hr, shave=2) + 0.2
