"""The weights table: every released set of weights, described once (as timm's ``default_cfgs``).

Every CLI default and every ``--weights NAME`` reads this table; nothing derives a file name from
a pattern. The files are package data (``lcoan/weights/``), so a plain ``pip install .`` ships
them.

    from lcoan.pretrained import get_pretrained
    cfg = get_pretrained("edge_x2")      # cfg.path, cfg.set5_psnr, cfg.recipe ...

An entry whose file is not in the package yet (weights still training) stays declared but is
not *available*: it is left out of :func:`list_pretrained` and asking for it is a one-line error.
Its scores are filled in from the evaluation of the file that lands, never before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError

__all__ = ["PretrainedCfg", "PRETRAINED", "SETS", "WEIGHTS_DIR", "DEFAULTS", "VIDEO_DEFAULTS", "get_pretrained",
           "list_pretrained", "default_pretrained", "resolve_weights"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Scores are `python -m lcoan.evaluate --sets Set5 Set14 B100 Urban100`: PSNR/SSIM on Y (BT.601),
# shave = scale, SR quantised to 8 bits, LR made from HR with MATLAB-exact bicubic (as published
# tables); Urban100 is its second half (img_051-img_100), the part in the shared data.
SETS = ("Set5", "Set14", "B100", "Urban100")
_DATA_291 = "T91 + BSD200 HR, MATLAB-bicubic LR made on the fly"


@dataclass(frozen=True)
class PretrainedCfg:
    name: str                       # what --weights takes
    preset: str                     # lcoan.presets name the weights were trained as
    scale: int
    file: str                       # inside lcoan/weights/
    train_data: str
    recipe: str                     # training config, relative to the repository
    set5_psnr: float | None = None  # dB, None until measured
    set5_ssim: float | None = None
    set14_psnr: float | None = None
    set14_ssim: float | None = None
    b100_psnr: float | None = None
    b100_ssim: float | None = None
    urban100_psnr: float | None = None
    urban100_ssim: float | None = None
    notes: str = ""

    @property
    def scores(self) -> dict[str, tuple[float | None, float | None]]:
        """{set: (PSNR, SSIM)} over :data:`SETS`."""
        return {name: (getattr(self, f"{name.lower()}_psnr"), getattr(self, f"{name.lower()}_ssim"))
                for name in SETS}

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def available(self) -> bool:
        return self.path.is_file()


PRETRAINED: dict[str, PretrainedCfg] = {cfg.name: cfg for cfg in (
    PretrainedCfg("edge_x2", "edge", 2, "lcoan_edge_x2.safetensors", _DATA_291, "configs/edge_x2_291.yaml",
                  set5_psnr=37.18, set5_ssim=0.9573, set14_psnr=32.82, set14_ssim=0.9102,
                  b100_psnr=31.61, b100_ssim=0.8923, urban100_psnr=29.69, urban100_ssim=0.8962,
                  notes="3,500 steps of batch 8 on one CPU thread (49 min)"),
    PretrainedCfg("realtime_x2", "realtime", 2, "lcoan_realtime_x2.safetensors", _DATA_291,
                  "configs/realtime_x2_cos.yaml",
                  set5_psnr=37.49, set5_ssim=0.9588, set14_psnr=33.11, set14_ssim=0.9129,
                  b100_psnr=31.88, b100_ssim=0.8959, urban100_psnr=30.32, urban100_ssim=0.9045,
                  notes="40,000 steps of batch 8 on CPU, cosine score, 1x1 + identity branches collapsed "
                        "(final weights, not the best validation)"),
    # the attention="none" twin of the long realtime recipe, trained side by side on the same
    # budget, so that what LCoA adds can be reproduced (docs/training.md)
    PretrainedCfg("realtime_none_x2", "realtime", 2, "lcoan_realtime_none_x2.safetensors", _DATA_291,
                  "configs/realtime_none_x2_rep.yaml",
                  set5_psnr=37.38, set5_ssim=0.9583, set14_psnr=33.01, set14_ssim=0.9123,
                  b100_psnr=31.84, b100_ssim=0.8952, urban100_psnr=30.21, urban100_ssim=0.9033,
                  notes="attention=none twin of realtime_x2 (configs/realtime_x2_cos.yaml): 40,000 steps of "
                        "batch 8 on CPU, 1x1 + identity branches collapsed (final weights)"),
)}

# The weights each CLI loads when given none, per scale.
DEFAULTS: dict[int, str] = {2: "edge_x2"}
# What the app loads for video and live inputs when given none: there the cost per frame
# decides (the numbers: docs/benchmarks.md, "Quality of the bundled weights" and "The app").
VIDEO_DEFAULTS: dict[int, str] = {2: "realtime_x2"}


def list_pretrained(include_unavailable: bool = False) -> list[str]:
    return [name for name, cfg in PRETRAINED.items() if include_unavailable or cfg.available]


def get_pretrained(name: str) -> PretrainedCfg:
    """The table entry ``name``; a :class:`CheckpointError` if unknown or not shipped."""
    cfg = PRETRAINED.get(name)
    if cfg is None:
        raise CheckpointError(name, f"no such weights name or file; names: {', '.join(list_pretrained())}")
    if not cfg.available:
        raise CheckpointError(name, f"weights declared but not bundled ({cfg.path} is missing); "
                                    f"train them with {cfg.recipe}")
    return cfg


def default_pretrained(scale: int = 2, video: bool = False) -> PretrainedCfg:
    """The default entry for ``scale``; ``video``: the one for video and live inputs."""
    if video and scale in VIDEO_DEFAULTS:
        return get_pretrained(VIDEO_DEFAULTS[scale])
    if scale not in DEFAULTS:
        raise CheckpointError(f"x{scale}", f"no bundled weights for x{scale}; pass --weights "
                                           f"(bundled: {', '.join(list_pretrained())})")
    return get_pretrained(DEFAULTS[scale])


def resolve_weights(weights: str | os.PathLike | None, scale: int | None = None) -> Path:
    """The file for ``--weights``: a table name, a path, or None for the default of ``scale`` (2).

    An existing file wins over a table name of the same spelling, so a local file is never
    shadowed by the table.
    """
    if weights is None or str(weights) == "":
        return default_pretrained(scale or 2).path
    path = Path(weights)
    if path.exists():
        return path
    if str(weights) not in PRETRAINED:
        if not path.suffix and len(path.parts) == 1:  # reads as a name, not a file
            get_pretrained(str(weights))  # raises, listing the names
        return path  # loading reports the missing file in one line naming it
    cfg = get_pretrained(str(weights))
    if scale is not None and cfg.scale != scale:
        raise CheckpointError(cfg.name, f"weights are for x{cfg.scale}, not x{scale}")
    return cfg.path
