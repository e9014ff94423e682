"""benchmarks/gpu_fps.py (the second half of `make gpu-check`): its CPU path, its no-GPU skip,
and the device rule it relies on in the model (one block of windows off the CPU)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, shared_path

from benchmarks import gpu_fps
from lcoan.model import lsp


def test_cpu_run_writes_finite_rows(tmp_path) -> None:
    out = tmp_path / "gpu_fps.json"
    image = shared_path("data", "benchmark", "Set5", "HR", "baby.png")
    status = gpu_fps.main(["--device", "cpu", "--lr", "16x24", "--iters", "1", "--no-compile",
                           "--models", "realtime,compact-32x16", "--image", str(image), "--out", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["lr"] == [16, 24] and report["dtype"] == "float16"
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"realtime", "compact-32x16"}
    for row in rows.values():
        assert row["mode"] == "eager" and row["fps"] > 0
        # FP16 must stay close to FP32 on a real image; NaN would fail this comparison
        assert math.isfinite(row["fp16_vs_fp32_db"]) and row["fp16_vs_fp32_db"] > 45
    assert rows["realtime"]["mflop_per_px"] <= 0.8
    assert rows["realtime"]["weights"] == "realtime_x2"  # the bundled entry of the weights table
    assert rows["compact-32x16"]["weights"].startswith("random")  # peers have no trained weights


def test_unknown_model_and_small_image_are_refused(tmp_path, capsys) -> None:
    assert gpu_fps.main(["--device", "cpu", "--models", "realtime,nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err
    image = shared_path("data", "benchmark", "Set5", "HR", "baby.png")
    try:
        gpu_fps.main(["--device", "cpu", "--lr", "4096x4096", "--image", str(image), "--out", str(tmp_path / "y.json")])
    except SystemExit as exc:
        assert "is smaller than --lr 4096x4096" in str(exc)
    else:
        raise AssertionError("a frame smaller than --lr must be refused")
    assert not (tmp_path / "y.json").exists()


def test_without_gpu_it_says_so_and_exits_0() -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_fps"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu_fps: no CUDA GPU visible") and "nothing to time" in proc.stdout


def test_window_blocks_are_cpu_sized_only_on_cpu() -> None:
    n = 16200  # windows of a 540x960 map at window 32
    cpu = lsp._window_blocks(n, 32, torch.device("cpu"))
    assert len(cpu) > 1 and cpu[0][0] == 0 and cpu[-1][1] == n
    assert all(a < b for a, b in cpu) and all(cpu[i][1] == cpu[i + 1][0] for i in range(len(cpu) - 1))
    assert lsp._window_blocks(n, 32, torch.device("meta")) == [(0, n)]


@pytest.mark.parametrize("threads, least", [(1, 1), (2, 40), (4, 80)])
def test_cpu_blocks_hold_enough_windows_for_every_thread(threads, least) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        blocks = lsp._window_blocks(1013, 128, torch.device("cpu"))  # edge at 270x480
    finally:
        torch.set_num_threads(before)
    sizes = [b - a for a, b in blocks]
    assert blocks[0][0] == 0 and blocks[-1][1] == 1013
    assert all(blocks[i][1] == blocks[i + 1][0] for i in range(len(blocks) - 1))
    assert min(sizes[:-1]) >= least
    if threads == 1:  # one thread keeps cache-sized blocks of about BLOCK_BYTES of weights
        assert max(sizes) * 12 * 128 * 128 <= lsp.BLOCK_BYTES
