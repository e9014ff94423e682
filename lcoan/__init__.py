"""LCoAN: Learnable Collaborative Attention Network for single-image super-resolution.

    from lcoan import build_model, load_model
    model = build_model("paper", scale=2)        # random weights
    model = load_model("weights/lcoan_edge_x2.safetensors")  # eval mode
"""
from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import CheckpointError, build_from_checkpoint
from .model import ATTENTION_MODES, LCoAN, LCoANConfig
from .presets import list_presets, preset_config

__all__ = ["build_model", "load_model", "default_weights", "list_presets", "LCoAN", "LCoANConfig",
           "CheckpointError", "ATTENTION_MODES"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def build_model(preset: str = "paper", scale: int = 2, **overrides) -> LCoAN:
    """A freshly initialised model from a named preset; any config field can be overridden."""
    config = preset_config(preset)
    config.update(overrides)
    return LCoAN(LCoANConfig(scale=scale, **config))


def load_model(path: str | os.PathLike, **overrides) -> LCoAN:
    """Load this project's checkpoints or a public-code state dict; returns the model in eval mode.

    ``overrides`` set config fields the file does not fix (``window_size`` for public-code
    state dicts, ``centroid_decay``); a ``scale`` that contradicts the weights is an error.
    """
    model, _ = build_from_checkpoint(path, **overrides)
    return model.eval()


def default_weights(scale: int = 2) -> Path:
    """The bundled release weights for ``scale``."""
    path = WEIGHTS_DIR / f"lcoan_edge_x{scale}.safetensors"
    if not path.is_file():
        raise CheckpointError(path, f"no bundled weights for x{scale}; pass --weights")
    return path
