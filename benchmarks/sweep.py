"""The runner shared by the training sweeps (``realtime_sweep``, ``lsp_sweep``).

Each candidate is a job: a short list of commands (train, then evaluate) run one after the other
in their own processes with one thread, ``parallel`` jobs at a time. A candidate's training
writes its own folder under the sweep's root, so a sweep that was stopped resumes where it was:
finished candidates are skipped and a started one resumes from its ``last.pt``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def train_command(config: str, name: str, sets: list[str], out_root: Path) -> list[str]:
    """``python -m lcoan.train`` of ``config`` with ``--set`` overrides, into ``out_root/name``."""
    cmd = [sys.executable, "-m", "lcoan.train", "--config", config]
    for item in [*sets, f"train.out={out_root / name}"]:
        cmd += ["--set", item]
    if (out_root / name / "last.pt").is_file():
        cmd += ["--resume"]
    return cmd


def short_recipe(steps: int) -> list[str]:
    """The ``--set`` overrides that shorten a recipe's schedule to ``steps``, validated once at the end."""
    return [f"train.steps={steps}", f"train.val_every={steps}", f"train.ckpt_every={max(100, steps // 10)}"]


def run_jobs(jobs: list[tuple[str, list[list[str]]]], parallel: int, out_root: Path) -> dict[str, int]:
    """Run each job's commands in sequence, ``parallel`` jobs at once; {name: exit status}.

    Output goes to ``out_root/<name>.log`` (beside the run: the trainer owns its folder). A job
    stops at its first failing command, with one line naming the log.
    """
    out_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread each: the jobs share the cores
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen, list[list[str]]]] = {}
    status: dict[str, int] = {}

    def start(name: str, commands: list[list[str]]) -> None:
        with open(out_root / f"{name}.log", "a") as log:
            proc = subprocess.Popen(commands[0], stdout=log, stderr=subprocess.STDOUT, env=env)
        running[name] = (proc, commands[1:])

    while pending or running:
        while pending and len(running) < parallel:
            start(*pending.pop(0))
        time.sleep(2)
        for name, (proc, rest) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            if code:
                print(f"{name}: exit {code}; see {out_root / (name + '.log')}")
                status[name] = code
            elif rest:
                start(name, rest)
            else:
                status[name] = 0
    return status


def frame_seconds(models: dict[str, torch.nn.Module], height: int = 360, width: int = 640,
                  rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` seconds per ``height``x``width`` LR frame for each model, timed in
    interleaved rounds so that every model sees the same machine state (one side-by-side run)."""
    x = torch.rand(1, 3, height, width)
    best = {name: float("inf") for name in models}
    with torch.no_grad():
        for model in models.values():
            model.eval()(x)  # warm-up: allocator, first-call paths
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                best[name] = min(best[name], time.perf_counter() - start)
    return best
