"""Where the project's data lives."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_root"]


def default_data_root() -> Path:
    """Data root: ``$LCOAN_DATA`` if set, else the ``shared/data`` folder next to the repository."""
    env = os.environ.get("LCOAN_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
