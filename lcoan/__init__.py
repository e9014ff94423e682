"""LCoAN: Learnable Collaborative Attention Network for single-image super-resolution.

    from lcoan import build_model, load_model
    model = build_model("paper", scale=2)        # random weights
    model = load_model("edge_x2")                # a weights-table name (lcoan.pretrained) or a file

Names are resolved on first use, so that ``lcoan.opspec`` and ``lcoan.graph_io`` (the op spec and
the graph interface every later stage imports) load without torch.
"""
from __future__ import annotations

import importlib

__all__ = ["build_model", "load_model", "default_weights", "resolve_weights", "list_presets",
           "list_pretrained", "get_pretrained", "LCoAN", "LCoANConfig", "CheckpointError", "ATTENTION_MODES"]

_HOME = {"build_model": "._api", "load_model": "._api", "default_weights": "._api",
         "resolve_weights": ".pretrained", "list_pretrained": ".pretrained", "get_pretrained": ".pretrained",
         "list_presets": ".presets", "LCoAN": ".model", "LCoANConfig": ".model", "ATTENTION_MODES": ".model",
         "CheckpointError": ".checkpoint"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'lcoan' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
