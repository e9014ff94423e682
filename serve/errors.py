"""The serving stage's one-line error.

:class:`ServeError` is what ``serve`` raises, writing a model repository (a Triton config that
does not parse, a plugin library Triton cannot load, a bad size or an output in the way) or
running the server (no serving venv, a server that does not come up): a
:class:`lcoan.errors.LcoanError`, so ``run_cli`` prints it as one ``error: ...`` line with exit
status 2, as ``ExportError`` and ``EngineError`` for the stages below.
"""
from __future__ import annotations

from lcoan.errors import LcoanError

__all__ = ["ServeError"]


class ServeError(LcoanError, RuntimeError):
    """A problem the user can fix (missing serving venv, bad repository or config); the message is
    one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
