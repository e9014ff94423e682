"""benchmarks/sweep.py and benchmarks/lsp_sweep.py: the resumable runner of the training sweeps."""
from __future__ import annotations

import sys

import torch

from benchmarks import lsp_sweep
from benchmarks.sweep import frame_seconds, run_jobs, train_command


def test_jobs_run_in_order_and_stop_at_the_first_failure(tmp_path, capsys) -> None:
    def write(text: str) -> list[str]:
        return [sys.executable, "-c", f"open({str(tmp_path / 'trace')!r}, 'a').write({text!r})"]
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    status = run_jobs([("a", [write("a1 "), write("a2 ")]), ("b", [fail, write("b2 ")])], 2, tmp_path / "runs")
    assert status == {"a": 0, "b": 3}
    assert (tmp_path / "trace").read_text() == "a1 a2 "                  # b2 never ran
    assert "b: exit 3; see" in capsys.readouterr().out and (tmp_path / "runs" / "b.log").is_file()


def test_a_stopped_sweep_resumes_where_it_was(tmp_path) -> None:
    root = tmp_path / "sweep"
    (root / "base").mkdir(parents=True)
    (root / "base" / "last.pt").write_bytes(b"")        # started: resumes from its checkpoint
    (root / "k16").mkdir()
    (root / "k16" / "final.safetensors").write_bytes(b"")  # trained, not evaluated: evaluates only
    (root / "none.eval.json").write_text("{}")         # done: skipped
    jobs = dict(lsp_sweep.jobs(lsp_sweep.CANDIDATES[:3], 300, ["Set5"], root))
    assert set(jobs) == {"base", "k16"}
    train, evaluate = jobs["base"]
    assert train[-1] == "--resume" and "train.steps=300" in train and f"train.out={root / 'base'}" in train
    assert evaluate[1:3] == ["-m", "lcoan.evaluate"] and str(root / "base.eval.json") in evaluate
    (only,) = jobs["k16"]
    assert only[1:3] == ["-m", "lcoan.evaluate"]
    assert "--resume" not in train_command(lsp_sweep.CONFIG, "k256", ["model.n_clusters=256"], root)


def test_frame_seconds_times_every_model() -> None:
    torch.set_num_threads(1)
    small = torch.nn.Conv2d(3, 3, 3, padding=1)
    large = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(8)])
    seconds = frame_seconds({"small": small, "large": large}, 64, 64, rounds=3)
    assert 0 < seconds["small"] < seconds["large"]
