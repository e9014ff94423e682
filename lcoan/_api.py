"""The entry points ``lcoan`` re-exports: build a preset, load weights, find the bundled ones."""
from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import build_from_checkpoint
from .model import LCoAN, LCoANConfig
from .presets import preset_config
from .pretrained import default_pretrained, resolve_weights


def build_model(preset: str = "paper", scale: int = 2, **overrides) -> LCoAN:
    """A freshly initialised model from a named preset; any config field can be overridden."""
    config = preset_config(preset)
    config.update(overrides)
    return LCoAN(LCoANConfig(scale=scale, **config))


def load_model(weights: str | os.PathLike, **overrides) -> LCoAN:
    """Load a weights-table name (``lcoan.pretrained``), this project's checkpoints or a public-code
    state dict; returns the model in eval mode.

    ``overrides`` set config fields the file does not fix (``window_size`` for public-code
    state dicts, ``centroid_decay``); a ``scale`` that contradicts the weights is an error.
    """
    model, _ = build_from_checkpoint(resolve_weights(weights), **overrides)
    return model.eval()


def default_weights(scale: int = 2) -> Path:
    """The file of the bundled default weights for ``scale`` (the weights table's ``DEFAULTS``)."""
    return default_pretrained(scale).path
