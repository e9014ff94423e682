"""Trainer robustness: configs read as users expect, one-line errors (wrong checkpoint, full disk),
no non-finite model ever saved or promoted, orphan temporary files removed, runs never replaced."""
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, shared_path
from lcoan.checkpoint import read_checkpoint
from lcoan.safeio import AtomicFile
from lcoan.train import ConfigError, load_config, main, train

TINY = str(REPO / "configs" / "tiny_x2_291.yaml")


def tiny_sets(out, steps=3, **extra):
    sets = [f"data.root={shared_path('data')}", "data.train=[benchmark/Set5/HR]", "data.patch=16",
            "data.workers=0", "data.val=null", f"train.out={out}", "train.batch_size=4",
            f"train.steps={steps}", "train.ckpt_every=3", "train.threads=1"]
    return sets + [f"{k}={v}" for k, v in extra.items()]


def cli(sets, *more):
    argv = ["--config", TINY]
    for item in sets:
        argv += ["--set", item]
    return main(argv + list(more))


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- point 6: configs
def test_set_values_follow_the_schema():
    cfg = load_config(TINY, ["train.lr=5e-4", "train.steps=2e3", "train.betas=[0.9, 1e-3]",
                             "model.attention=none"])
    assert cfg["train"]["lr"] == 5e-4 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["steps"] == 2000 and isinstance(cfg["train"]["steps"], int)
    assert cfg["train"]["betas"] == [0.9, 1e-3] and all(isinstance(b, float) for b in cfg["train"]["betas"])
    # the optimizer accepts what the config gives (a string lr raised TypeError in Adam)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=cfg["train"]["lr"], betas=tuple(cfg["train"]["betas"]))


@pytest.mark.parametrize("item, words", [
    ("train.stesp=2000", ["train.stesp", "did you mean 'train.steps'"]),
    ("trian.steps=5", ["trian", "did you mean 'train'"]),
    ("model.n_feat=8", ["model.n_feat", "did you mean 'model.n_feats'"]),
    ("model.preset=tinny", ["tinny", "did you mean 'tiny'"]),
    ("train.lr=fast", ["train.lr", "expected float", "fast"]),
    ("train.steps=12.5", ["train.steps", "whole number"]),
    ("train.amp=1", ["train.amp", "expected bool"]),
    ("train.milestones=[10, soon]", ["train.milestones[1]", "expected int"]),
    ("data.patch=null", ["data.patch", "expected int"]),
])
def test_bad_set_is_one_line_naming_the_key(item, words, capsys, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [item])
    for word in words:
        assert word in str(info.value)
    assert cli([f"train.out={tmp_path}", item]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert words[0] in line
    assert not (tmp_path / "last.pt").exists()


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("train: {lr: 5e-4, stesp: 10}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: unknown config key 'train.stesp' \(did you mean 'train.steps'\?\)"):
        load_config(cfg)
    cfg.write_text("train: {lr: 5e-4}\n")
    assert load_config(cfg)["train"]["lr"] == 5e-4
    for shipped in (REPO / "configs").glob("*.yaml"):  # every shipped recipe passes its own schema
        load_config(shipped)


# --------------------------------------------------------------------------- point 4: wrong checkpoint
def test_resume_with_another_preset_or_scale_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(tiny_sets(out)) == 0
    capsys.readouterr()
    before = (out / "last.pt").read_bytes()
    for other, words in (("model.scale=4", ["x2", "x4", "scale 2 -> 4"]),
                         ("model.preset=edge", ["preset tiny", "preset edge", "n_feats 16 -> 64"])):
        assert cli(tiny_sets(out, steps=6) + [other], "--resume") == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(out / "last.pt") in line
        for word in words:
            assert word in line, line
    assert (out / "last.pt").read_bytes() == before


def test_fresh_run_never_replaces_an_earlier_run_or_its_init(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(tiny_sets(out)) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli(tiny_sets(out)) == 2  # same folder without --resume
    assert "--resume" in one_error_line(capsys.readouterr().err)
    other = tmp_path / "other"
    other.mkdir()
    (other / "final.safetensors").hardlink_to(out / "final.safetensors")  # init_from the file it would write
    assert cli(tiny_sets(other, **{"train.init_from": other / "final.safetensors"})) == 2
    assert "final.safetensors" in one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --------------------------------------------------------------------------- point 3: non-finite
def test_diverged_run_stops_and_keeps_good_best_and_last(tmp_path, capsys):
    """A real divergence (Adam with lr 1e30 after a good start): never promoted, never saved."""
    out = tmp_path / "run"
    good = tiny_sets(out, steps=2, **{"data.val": "benchmark/Set5", "data.val_max_images": 1,
                                      "train.val_every": 2, "train.ckpt_every": 2})
    assert cli(good) == 0
    best, last = out / "best.safetensors", out / "last.pt"
    raw = torch.load(last, weights_only=True)
    raw["optimizer"]["param_groups"][0]["lr"] = 1e30  # what a wrong learning rate does to a run
    torch.save(raw, last)
    best_bytes, last_bytes, final_bytes = best.read_bytes(), last.read_bytes(), (out / "final.safetensors").read_bytes()
    capsys.readouterr()
    diverge = tiny_sets(out, steps=8, **{"data.val": "benchmark/Set5", "data.val_max_images": 1,
                                          "train.val_every": 1, "train.ckpt_every": 100})
    assert cli(diverge, "--resume") == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert "diverged" in line and "last.pt" in line
    assert "output is not finite" in captured.out  # validated NaN, scored NaN, not promoted
    assert best.read_bytes() == best_bytes, "a non-finite model replaced best.safetensors"
    assert last.read_bytes() == last_bytes
    assert (out / "final.safetensors").read_bytes() == final_bytes


def test_non_finite_model_is_never_saved(tmp_path):
    from lcoan import CheckpointError, build_model
    from lcoan.checkpoint import save_checkpoint, save_safetensors
    model = build_model("tiny")
    save_checkpoint(tmp_path / "last.pt", model, step=1)
    before = (tmp_path / "last.pt").read_bytes()
    with torch.no_grad():
        model.tail_conv.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="tail_conv.weight"):
        save_checkpoint(tmp_path / "last.pt", model, step=2)
    with pytest.raises(CheckpointError, match="tail_conv.weight"):
        save_safetensors(model, tmp_path / "best.safetensors")
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# --------------------------------------------------------------------------- point 4: full disk
def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


@pytest.mark.slow
def test_full_disk_is_one_line_naming_the_file(tmp_path):
    """RLIMIT_FSIZE below a checkpoint's size: the write fails as on a full disk."""
    out = tmp_path / "run"
    assert cli(tiny_sets(out)) == 0
    before = (out / "last.pt").read_bytes()
    assert len(before) > 60_000
    argv = [sys.executable, "-m", "lcoan.train", "--config", TINY, "--resume"]
    for item in tiny_sets(out, steps=6):
        argv += ["--set", item]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = one_error_line(proc.stderr)
    assert "no space left" in line and str(out / "last.pt") in line, line
    assert (out / "last.pt").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "final.safetensors", "last.pt", "train.log"], \
        "temporary file left"


# --------------------------------------------------------------------------- point 8: orphans
KILL_MID_WRITE = """
import os, signal, sys
from lcoan.safeio import atomic_write
def write(tmp):
    with open(tmp, "wb") as fh:
        fh.write(b"PK\\x03\\x04" + b"half a checkpoint" * 1000)
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
atomic_write(sys.argv[1], write)
"""


def test_orphan_temp_files_of_a_killed_write_are_removed_at_next_start(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(tiny_sets(out)) == 0
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(out / "last.pt")], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL
    orphans = [p for p in out.iterdir() if p.name.startswith(".last.pt.")]
    assert len(orphans) == 1
    AtomicFile(out / "best.safetensors")  # a second kind of orphan, never committed
    keep = out / "notes.tmp"
    keep.write_text("mine")
    capsys.readouterr()
    assert cli(tiny_sets(out, steps=4), "--resume") == 0
    err = capsys.readouterr().err
    assert str(orphans[0]) in err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "final.safetensors", "last.pt", "notes.tmp", "train.log"]
    assert read_checkpoint(out / "last.pt")[2]["step"] == 4


def test_train_function_refuses_fresh_run_in_used_folder(tmp_path):
    cfg = load_config(TINY, tiny_sets(tmp_path / "r"))
    train(cfg)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)
