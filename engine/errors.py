"""The engine stage's one-line error.

:class:`EngineError` is what ``engine.trt`` (finding TensorRT, checking plugin libraries),
``engine.build`` (shape profiles, plugin loading, building), ``engine.cache`` (engine files and
their sidecars) and ``engine.runtime`` (loading and running engines) raise: a
:class:`lcoan.errors.LcoanError`, so ``run_cli`` prints it as one ``error: ...`` line with exit
status 2, like ``export``'s ``ExportError`` for the stage below.
"""
from __future__ import annotations

from lcoan.errors import LcoanError

__all__ = ["EngineError"]


class EngineError(LcoanError, RuntimeError):
    """A problem the user can fix (no TensorRT, a wrong plugin library, an engine that cannot
    load or run here); the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
