"""Train LCoAN.

    python -m lcoan.train --config configs/edge_x2_291.yaml [--set train.steps=2000 ...] [--resume [CKPT] | --force]
    torchrun --nproc_per_node 2 -m lcoan.train --config ...     # DistributedDataParallel

A run folder (``train.out``) gets ``config.yaml`` (the resolved config), ``train.log`` (banner,
validation, checkpoints) and the checkpoints. A folder that already holds a run needs ``--resume``
(continue) or ``--force`` (start afresh; the old run is moved to ``<out>.replaced-<time>``).
Ctrl-C finishes the current step, saves ``last.pt`` and prints the ``--resume`` command.

The batch of every step is a pure function of (seed, step), not of an iterator's state, so
a run killed and resumed from its last checkpoint reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

from collections import Counter
import contextlib
import dataclasses
import difflib
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from . import build_model
from .checkpoint import (CheckpointError, build_from_checkpoint, first_non_finite, read_checkpoint,  # noqa: F401
                         save_checkpoint, save_safetensors)
from .safeio import OutputError, check_writable, refuse_overwrite, remove_orphans
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, LcoanError, exit_status, one_line, report, run_cli

DEFAULTS: dict = {
    "model": {"preset": "edge", "scale": 2},
    "data": {"root": None, "train": ["train/T91", "train/BSD200"], "paired": False, "patch": 48,
             "repeat": 1, "workers": 2, "val": "benchmark/Set5", "val_max_images": 5,
             "hr_dir": "HR", "lr_dir": "LR_bicubic/X{s}"},
    "train": {"steps": 1000, "batch_size": 16, "lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8,
              "schedule": "multistep", "milestones": [], "gamma": 0.5, "min_lr": 0.0, "channels_last": False,
              "seed": 0, "ckpt_every": 500, "val_every": 500,
              "log_every": 20, "weight_ema": 0.0, "amp": True, "loss": "l1", "init_from": None, "out": "runs/edge_x2",
              "tensorboard": False, "device": "auto", "threads": 0},
}


# ----------------------------------------------------------------------------- config
def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


class ConfigError(LcoanError, ValueError):
    """A config entry that is unknown or of the wrong type; one line naming the key."""


# The schema is DEFAULTS itself (each value's type), plus what DEFAULTS cannot say: entries that
# may be null, list item types, and the model section, which takes any LCoANConfig field.
_NULLABLE = {"data.root", "data.val", "train.init_from"}
_ITEMS = {"data.train": str, "train.betas": float, "train.milestones": int, "model.rgb_mean": float}
_STR_OR_LIST = {"data.train"}
RUN_FILES = ("last.pt", "best.safetensors", "final.safetensors")


def _model_schema() -> dict:
    from .model.network import LCoANConfig
    fields = {f.name: f.default for f in dataclasses.fields(LCoANConfig)}
    return {"preset": "edge", **fields}


def _schema() -> dict:
    return {"model": _model_schema(), "data": DEFAULTS["data"], "train": DEFAULTS["train"]}


def _closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(sorted(choices))})"


def _kind(example) -> type:
    if isinstance(example, bool):
        return bool
    if isinstance(example, (list, tuple)):
        return list
    return type(example)


def _coerce(key: str, value, expected: type, item: type | None = None):
    """``value`` as ``expected``; YAML 1.1 reads ``5e-4`` as a string, so numeric strings convert."""
    def bad(reason: str = ""):
        shown = repr(value) if not isinstance(value, str) else f"'{value}'"
        return ConfigError(f"config key {key!r}: expected {expected.__name__}"
                           + (f" of {item.__name__}" if item else "") + f", got {shown}" + reason)
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if expected in (int, float):
        if isinstance(value, bool) or value is None:
            raise bad()
        if isinstance(value, str):
            try:
                value_num = float(value.strip())
            except ValueError:
                raise bad() from None
        elif isinstance(value, (int, float)):
            value_num = value
        else:
            raise bad()
        if expected is float:
            return float(value_num)
        if float(value_num).is_integer():
            return int(value_num)
        raise bad(" (not a whole number)")
    if expected is str:
        if isinstance(value, str):
            return value
        raise bad()
    if expected is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [_coerce(f"{key}[{i}]", v, item, None) if item else v for i, v in enumerate(value)]
    return value


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Check every entry against the schema; returns a copy with numbers of the right type.

    Unknown sections and keys are errors that name the closest valid key (``train.stesp``:
    did you mean ``train.steps``?). ``source`` is named in the messages (the YAML file).
    """
    schema = _schema()
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(cfg).__name__}")
    out = {}
    for section, entries in cfg.items():
        if section not in schema:
            raise ConfigError(f"{source}: unknown config section {section!r}{_closest(str(section), schema)}")
        if not isinstance(entries, dict):
            raise ConfigError(f"{source}: config section {section!r} must be a mapping of keys, got {entries!r}")
        allowed = schema[section]
        out[section] = {}
        for key, value in entries.items():
            full = f"{section}.{key}"
            if key not in allowed:
                names = [f"{section}.{k}" for k in allowed]
                raise ConfigError(f"{source}: unknown config key {full!r}{_closest(full, names)}")
            if value is None and (full in _NULLABLE or allowed[key] is None):
                out[section][key] = None
                continue
            if full in _STR_OR_LIST and isinstance(value, str):
                out[section][key] = value
                continue
            try:
                out[section][key] = _coerce(full, value, _kind(allowed[key]), _ITEMS.get(full))
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    from .presets import list_presets
    preset = out.get("model", {}).get("preset")
    if preset is not None and preset not in list_presets():
        raise ConfigError(f"{source}: unknown model.preset {preset!r}{_closest(preset, list_presets())}")
    loss = out.get("train", {}).get("loss")
    if loss is not None and loss not in LOSSES:
        raise ConfigError(f"{source}: train.loss {loss!r} is not one of {', '.join(LOSSES)}")
    return out


def load_config(path: str | os.PathLike | None, sets: list[str] = ()) -> dict:
    """DEFAULTS, then the YAML file, then ``--set key=value`` overrides; validated (ConfigError)."""
    cfg = DEFAULTS
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
        if loaded is None:  # an empty or truncated-to-nothing recipe would silently train on defaults
            raise ConfigError(f"{path}: the config is empty")
        cfg = _merge(cfg, validate_config(loaded, str(path)))
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = cfg = _merge(cfg, {})
        *parents, leaf = key.split(".")
        for name in parents:
            if not isinstance(node.get(name, {}), dict):
                raise ConfigError(f"--set {item}: {name!r} is not a section")
            node[name] = dict(node.get(name) or {})
            node = node[name]
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[leaf] = raw
        try:
            validate_config({k: v for k, v in cfg.items()}, "--set")
        except ConfigError as exc:
            raise ConfigError(f"--set {item}: {str(exc).split(': ', 1)[1]}") from None
    return validate_config(cfg, "config")


# ----------------------------------------------------------------------------- data
class StepBatches(Sampler):
    """Batches for steps [start, stop): epoch-wise permutations keyed by (seed, epoch).

    Each item is ``(index, sample_seed)``; the dataset draws that sample's crop and flips
    from ``sample_seed`` alone, so neither worker count nor process layout changes a batch.
    """

    def __init__(self, n_items: int, global_batch: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        if n_items < global_batch:
            raise ConfigError(f"{n_items} training samples cannot fill a batch of {global_batch}")
        self.n, self.batch, self.seed = n_items, global_batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.steps_per_epoch = n_items // global_batch

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def batch_for_step(self, step: int) -> list[tuple[int, int]]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        chosen = order[offset * self.batch:(offset + 1) * self.batch].tolist()
        keys = [(index, (self.seed * 1_000_003 + step) * 1024 + j) for j, index in enumerate(chosen)]
        per_rank = self.batch // self.world
        return keys[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batch_for_step(step)


def build_datasets(cfg: dict, scale: int):
    from .data import HROnlyDataset, PairedDataset
    from .data.paths import default_data_root

    data = cfg["data"]
    root = Path(data["root"]) if data.get("root") else default_data_root()
    train_dirs = [root / p for p in (data["train"] if isinstance(data["train"], list) else [data["train"]])]
    for folder in train_dirs:
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: training folder not found (set data.root or data.train)")
    if data.get("paired"):
        if len(train_dirs) != 1:
            raise ConfigError("data.paired expects one dataset root in data.train")
        train = PairedDataset(train_dirs[0], scale, patch_size=data["patch"], train=True, repeat=data["repeat"],
                              hr_dir=data.get("hr_dir", "HR"), lr_dir=data.get("lr_dir", "LR_bicubic/X{s}"))
    else:
        train = HROnlyDataset(train_dirs, scale, patch_size=data["patch"], train=True, repeat=data["repeat"])
    val = None
    if data.get("val"):
        val_root = root / data["val"]
        if val_root.exists():
            val = PairedDataset(val_root, scale, train=False)
    return train, val


# ----------------------------------------------------------------------------- helpers
def rng_state() -> dict:
    """Every RNG's state, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def init_from(model, path) -> None:
    """Start from another run's weights: all of them for the same scale (a second stage),
    everything but the upsampler for another scale (x3/x4 from x2)."""
    _, state, _ = read_checkpoint(path)
    own = model.state_dict()
    ups = {k: v.shape for k, v in state.items() if k.startswith("upsampler.")}
    same_scale = ups == {k: v.shape for k, v in own.items() if k.startswith("upsampler.")}
    keep = {k: v for k, v in state.items() if same_scale or not k.startswith("upsampler.")}
    for key, value in keep.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(path, f"key {key!r} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    missing = [k for k in own if k not in keep and (same_scale or not k.startswith("upsampler."))]
    if missing:
        raise CheckpointError(path, f"missing key {missing[0]!r}")
    model.load_state_dict(keep, strict=False)


# PSNR is a mean squared error: the papers train on L1 and fine-tune a last stage on it (RLFN, ECBSR)
LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


class TrainingDiverged(LcoanError, RuntimeError):
    """A non-finite loss or non-finite weights; one line, nothing more is saved."""

    exit_code = EXIT_FAILED  # the command was right; the run failed


class TrainingInterrupted(LcoanError, RuntimeError):
    """Ctrl-C: the current step was finished and ``checkpoint`` saved (None if none could be)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


RUN_EXTRAS = ("config.yaml", "train.log")  # written at start: a folder holding them holds a run


class _RunLog:
    """Lines for the console (through the progress bar when there is one) and ``<out>/train.log``."""

    def __init__(self, path: Path | None):
        self.path, self.bar = path, None

    def __call__(self, line: str, console: bool = True) -> None:
        if console:
            (self.bar.write if self.bar is not None else print)(line)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


_ARCH_FIELDS = ("scale", "n_feats", "n_groups", "n_blocks", "n_clusters", "window_size", "match_dim", "attention",
                "reparam", "score")


def check_resume_config(path, saved: dict, raw: dict, model, preset: str) -> None:
    """A checkpoint resumes only the model it was trained as (preset, scale, architecture)."""
    want = model.config.to_dict()
    # a field added after the checkpoint was written holds its default there (reparam: "")
    defaults = _model_schema()
    diff = [f"{k} {saved.get(k, defaults[k])!r} -> {want[k]!r}" for k in _ARCH_FIELDS
            if saved.get(k, defaults[k]) != want[k]]
    if diff:
        old = (raw.get("train_config") or {}).get("model", {}).get("preset", "?")
        raise CheckpointError(path, f"checkpoint of preset {old} x{saved.get('scale')} cannot resume preset "
                                    f"{preset} x{want['scale']} ({', '.join(diff)}); resume with the config it "
                                    "was trained with, or start a new run from it with train.init_from")


SCHEDULES = ("multistep", "cosine")


def make_scheduler(optimizer, tc: dict):
    """``multistep``: lr x gamma at each milestone; ``cosine``: lr -> min_lr over train.steps (SGDR
    without restarts, as BasicSR's efficient-SR recipes)."""
    if tc["schedule"] not in SCHEDULES:
        raise ConfigError(f"train.schedule {tc['schedule']!r} is not one of {', '.join(SCHEDULES)}")
    if tc["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc["steps"], eta_min=tc["min_lr"])
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(tc["milestones"]), gamma=tc["gamma"])


@torch.no_grad()
def validate(model, dataset, device, scale: int, max_images: int) -> float:
    from .metrics import psnr_y

    model.eval()
    scores = []
    for i in range(min(len(dataset), max_images)):
        lr, hr = dataset[i]
        sr = model(lr.unsqueeze(0).to(device)).squeeze(0).float().cpu()
        scores.append(float(psnr_y(sr, hr, shave=scale)))
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------- the run's parts
def _process(tc: dict) -> tuple[bool, int, int, torch.device]:
    """(distributed, rank, world size, device) of this process; joins the process group under torchrun."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = _device(tc["device"])
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if tc.get("threads"):
        torch.set_num_threads(int(tc["threads"]))
    if tc["batch_size"] % world:
        raise ConfigError(f"batch_size {tc['batch_size']} must divide evenly over {world} processes")
    return distributed, rank, world, device


class _Run:
    """One training run's state: model, optimizer, schedule, EMA, step, best score, and its files."""

    def __init__(self, cfg: dict, resume: str | None):
        self.cfg, tc = cfg, cfg["train"]
        self.tc = tc
        self.distributed, self.rank, self.world, self.device = _process(tc)
        self.out = Path(tc["out"])
        torch.manual_seed(tc["seed"])
        random.seed(tc["seed"])
        np.random.seed(tc["seed"])
        mc = dict(cfg["model"])
        self.preset, self.scale = mc.pop("preset"), mc.pop("scale")
        self._check_outputs(resume)
        self.model = build_model(self.preset, scale=self.scale, **mc)
        if tc.get("init_from") and not resume:
            init_from(self.model, tc["init_from"])
        # NHWC convolutions are about 1.1x faster on CPU (benchmarks/train_speed.py); same arithmetic
        self.memory_format = torch.channels_last if tc["channels_last"] else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]), eps=tc["eps"])
        self.scheduler = make_scheduler(self.optimizer, tc)
        self.ema = None
        if tc["weight_ema"]:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc["weight_ema"]), use_buffers=True)
        self.use_amp = bool(tc["amp"]) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step, self.best = 0, -math.inf
        if resume:
            self._restore(resume)
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model
        self.log = _RunLog(self.out / "train.log" if self.rank == 0 else None)

    def _check_outputs(self, resume: str | None) -> None:
        """Everything about train.out that can fail, before a model is built or data is read."""
        tc, out = self.tc, self.out
        run_files = [out / name for name in RUN_FILES]
        if not resume:
            taken = [p for p in run_files + [out / n for n in RUN_EXTRAS] if p.exists()]
            if taken:  # a fresh run would replace them, best.safetensors included, with worse weights
                raise ConfigError(f"{taken[0]}: train.out {out} already holds a run; continue it with --resume, "
                                  "start afresh with --force (the old run is kept aside), or set train.out to a new folder")
        if tc.get("init_from") and not resume:
            for target in run_files:  # this run would replace the weights it starts from
                refuse_overwrite(target, [tc["init_from"]], what=f"run's {target.name} (train.out)")
        self.created_out = not out.exists()   # the check below makes it; a refused run removes it
        if self.rank == 0:
            for target in run_files + [out / "config.yaml"]:  # left by a kill during a write
                for orphan in remove_orphans(target):
                    print(f"removed {orphan}: temporary file of an interrupted write", file=sys.stderr)
            try:
                check_writable(out / "last.pt", what="training checkpoint (train.out)")
            except OutputError as exc:  # found before the work: a usage error, not a failed run
                raise ConfigError(one_line(exc)) from None

    def _restore(self, resume: str) -> None:
        saved, state, raw = read_checkpoint(resume)
        if "optimizer" not in raw:
            raise CheckpointError(resume, "not a training checkpoint (no optimizer state); use train.init_from")
        check_resume_config(resume, saved, raw, self.model, self.preset)
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(raw["optimizer"])
        self.scheduler.load_state_dict(raw["scheduler"])
        if self.tc["schedule"] == "multistep":
            self.scheduler.milestones = Counter(self.tc["milestones"])  # the config may shorten a run's schedule
        self.scaler.load_state_dict(raw["scaler"])
        if self.ema is not None and raw.get("ema_model") is not None:
            self.ema.load_state_dict(raw["ema_model"])
        self.step, self.best = int(raw["step"]), float(raw["best_psnr"])
        if not math.isfinite(self.best):  # a score of a broken model (inf from NaN) must not block every later one
            self.best = -math.inf
        set_rng_state(raw["rng"])

    @property
    def released(self):
        """The weights that are published: the EMA's when there is one."""
        return self.ema.module if self.ema else self.model

    def banner(self, n_samples: int, resume: str | None) -> None:
        from .safeio import atomic_write
        cfg, tc = self.cfg, self.tc
        atomic_write(self.out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        params = sum(p.numel() for p in self.model.parameters())
        data = ", ".join(cfg["data"]["train"] if isinstance(cfg["data"]["train"], list) else [cfg["data"]["train"]])
        self.log(f"lcoan.train: preset {self.preset} x{self.scale}, {params:,} parameters; data {data} "
                 f"({n_samples} samples, patch {cfg['data']['patch']}, batch {tc['batch_size']}); "
                 f"steps {self.step}/{tc['steps']}{' (resumed from ' + str(resume) + ')' if resume else ''}; "
                 f"device {self.device}{f' x{self.world}' if self.world > 1 else ''}; output {self.out}/ "
                 "(config.yaml, train.log, last.pt, best.safetensors, final.safetensors)")

    def train_step(self, lr_batch: Tensor, hr_batch: Tensor) -> Tensor:
        """One optimizer step on one batch; a non-finite loss stops the run with nothing saved."""
        lr_batch = lr_batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        hr_batch = hr_batch.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss = LOSSES[self.tc["loss"]](self.net(lr_batch), hr_batch)
        bad = (~torch.isfinite(loss.detach())).float()
        if self.distributed:  # every rank stops together, or the others would wait forever
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            raise TrainingDiverged(f"training diverged at step {self.step + 1}: the loss is {loss.item()} "
                                   f"(lower train.lr); nothing saved, the last "
                                   f"good checkpoint is kept ({self.out / 'last.pt'})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return loss

    def require_finite_weights(self) -> None:
        for name, module in (("model", self.model), ("weight EMA", self.ema.module if self.ema else None)):
            found = first_non_finite(module.state_dict()) if module is not None else None
            if found:
                raise TrainingDiverged(f"training diverged at step {self.step}: {name} tensor {found[0]!r} has "
                                       f"{found[1]} non-finite value(s); nothing saved, the last good "
                                       f"checkpoint is kept ({self.out / 'last.pt'})")

    def checkpoint(self, path: Path) -> None:
        self.require_finite_weights()
        save_checkpoint(path, self.model, optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                        ema_model=self.ema.state_dict() if self.ema else None,
                        step=self.step, best_psnr=self.best, rng=rng_state(), train_config=self.cfg)

    def validate_and_keep_best(self, val_set) -> float:
        """Validation Y-PSNR; a new best is written to best.safetensors, a NaN never is."""
        psnr = validate(self.released, val_set, self.device, self.scale, self.cfg["data"]["val_max_images"])
        if not math.isfinite(psnr):  # NaN: the model's output is broken; never promoted
            self.log(f"step {self.step}: val Y-PSNR {psnr}: the model's output is not finite; "
                     f"{self.out / 'best.safetensors'} kept")
            self.require_finite_weights()
        else:
            self.log(f"step {self.step}: val Y-PSNR {psnr:.3f} dB")
        if math.isfinite(psnr) and psnr > self.best:
            self.best = psnr
            self.require_finite_weights()
            save_safetensors(self.released, self.out / "best.safetensors", {"step": self.step, "psnr_y": psnr})
        return psnr

    def interrupted(self) -> TrainingInterrupted:
        saved = None
        if self.step > 0:
            self.checkpoint(self.out / "last.pt")
            saved = self.out / "last.pt"
        self.log(f"interrupted at step {self.step}" + (f"; saved {saved}" if saved else "; nothing to save yet"),
                 console=False)
        return TrainingInterrupted(self.step, saved)

    def finish(self) -> Path:
        final = self.out / "final.safetensors"
        if self.rank == 0 and self.step >= self.tc["steps"]:
            self.require_finite_weights()
            save_safetensors(self.released, final, {"step": self.step})
            self.log(f"finished at step {self.step}: wrote {final}", console=False)
        if self.distributed:
            dist.barrier()
        return final


class _Sigint:
    """Ctrl-C finishes the step in flight (a half-applied optimizer step could not be resumed
    bit-exactly), then the loop saves last.pt and stops; a second Ctrl-C stops at once."""

    def __init__(self, bar, active: bool):
        self.bar, self.active, self.requested, self.previous = bar, active, False, None

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.bar.write("interrupted: finishing this step, then saving last.pt (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _tensorboard(run: _Run):
    if not (run.tc["tensorboard"] and run.rank == 0):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs TensorBoard: pip install tensorboard") from None
    return SummaryWriter(run.out / "tb")


# ----------------------------------------------------------------------------- the loop
def train(cfg: dict, resume: str | None = None, stop_after: int | None = None) -> Path:
    """Run (or continue) training; returns the path of the exported release weights.

    ``stop_after`` ends the run early at that step (after its checkpoint), as a kill would.
    """
    from tqdm import tqdm
    run = _Run(cfg, resume)
    tc, main_rank = run.tc, run.rank == 0
    try:
        train_set, val_set = build_datasets(cfg, run.scale)
    except BaseException:
        if run.created_out:  # refused before any work: leave nothing behind, not even the folder
            with contextlib.suppress(OSError):
                run.out.rmdir()
        raise
    if main_rank:
        run.banner(len(train_set), resume)
    batches = StepBatches(len(train_set), tc["batch_size"], tc["seed"], run.step, tc["steps"], run.rank, run.world)
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=int(cfg["data"]["workers"]),
                        pin_memory=run.device.type == "cuda", persistent_workers=False)
    writer = _tensorboard(run)
    bar = tqdm(total=tc["steps"], initial=run.step, disable=not main_rank, dynamic_ncols=True, unit="it")
    run.log.bar = bar
    sigint = _Sigint(bar, active=not run.distributed and main_rank and _main_thread())
    try:
        with sigint:
            for lr_batch, hr_batch in loader:
                loss = run.train_step(lr_batch, hr_batch)
                bar.update(1)
                if run.step % tc["log_every"] == 0 or run.step == tc["steps"]:
                    lr_now = run.scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_now:.1e}")
                    run.log(f"step {run.step}: loss {loss.item():.5f} lr {lr_now:.2e}", console=False)
                    if writer:
                        writer.add_scalar("train/l1", loss.item(), run.step)
                if main_rank and val_set is not None and (run.step % tc["val_every"] == 0 or run.step == tc["steps"]):
                    psnr = run.validate_and_keep_best(val_set)
                    if writer:
                        writer.add_scalar("val/psnr_y", psnr, run.step)
                if main_rank and (run.step % tc["ckpt_every"] == 0 or run.step == tc["steps"]):
                    run.checkpoint(run.out / "last.pt")
                if sigint.requested:
                    raise run.interrupted()
                if stop_after is not None and run.step >= stop_after:
                    break
    except RuntimeError as exc:
        # Ctrl-C in a terminal also reaches the DataLoader workers, which then fail the next fetch
        if sigint.requested and not isinstance(exc, (TrainingInterrupted, TrainingDiverged)):
            raise run.interrupted() from None
        raise
    finally:
        bar.close()  # before any error line, so that it is not glued to the bar
    final = run.finish()
    if writer:
        writer.close()
    return final


def _run(argv: list[str] | None) -> int:
    from .cli import ArgumentParser
    parser = ArgumentParser(prog="python -m lcoan.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="training recipe, e.g. configs/tiny_x2_291.yaml (a quick CPU run) or "
                             "configs/edge_x2_291.yaml (the bundled weights' recipe); required")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. train.steps=2000 (repeatable)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                     help="continue from a training checkpoint (CKPT default: <train.out>/last.pt)")
    run.add_argument("--force", action="store_true",
                     help="start afresh even if train.out holds a run; the old one is moved to "
                          "<train.out>.replaced-<time>")
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGXFSZ") and _main_thread():
        # Past a file-size limit the default action kills the process silently; ignored, the write
        # fails with EFBIG and the error below names the file.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        cfg = load_config(args.config, args.set)
        resume = args.resume
        if resume == "auto":
            resume = str(Path(cfg["train"]["out"]) / "last.pt")
        out = Path(cfg["train"]["out"])
        if args.force and int(os.environ.get("RANK", "0")) == 0 and any(
                (out / n).exists() for n in RUN_FILES + RUN_EXTRAS):
            aside = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(aside)
            print(f"--force: moved the earlier run {out} to {aside}", file=sys.stderr)
        started = time.time()
        final = train(cfg, resume)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"done in {time.time() - started:.0f} s: wrote {final} (and {out / 'last.pt'}, "
                  f"{out / 'best.safetensors'} if validated, {out / 'config.yaml'}, {out / 'train.log'})")
    except TrainingInterrupted as exc:
        again, skip = [], False
        for a in (argv if argv is not None else sys.argv[1:]):  # the same command, with --resume
            if skip and not a.startswith("-"):
                skip = False
                continue
            skip = a == "--resume"
            if a != "--force" and a != "--resume" and not a.startswith("--resume="):
                again.append(a)
        if exc.checkpoint is None:
            print(f"interrupted at step {exc.step}, before the first step ended: nothing saved", file=sys.stderr)
        else:
            import shlex
            resume_cmd = "python -m lcoan.train " + " ".join(shlex.quote(a) for a in again)
            resume_cmd += " --resume"
            print(f"interrupted at step {exc.step}: saved {exc.checkpoint}; continue with:\n  {resume_cmd}",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    except OutputError as exc:  # a full disk mid-run: the command was right, the run failed
        return report(one_line(exc), EXIT_FAILED)
    except ValueError as exc:
        if isinstance(exc, LcoanError):
            raise
        # values the config schema cannot see (a width the network refuses, a scale the data
        # cannot give) surface from the layers below as ValueError; they are config problems too
        raise ConfigError(one_line(exc)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m lcoan.train`` (and the ``lcoan-train`` script): returns the exit status; errors
    are one line (:func:`lcoan.errors.exit_status`), Ctrl-C during training saves ``last.pt`` and
    prints the ``--resume`` command (status 130)."""
    return exit_status(_run, argv)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    run_cli(_run)
