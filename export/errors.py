"""One-line errors for the export command-line tools.

Library functions raise :class:`ExportError` (a :class:`lcoan.errors.LcoanError`, like
``lcoan.CheckpointError`` for weights files); ``run_cli`` (``lcoan.errors``'s, the one every CLI
uses) turns either into a single ``error: ...`` line on stderr and exit status 2, with no traceback.
"""
from __future__ import annotations

from lcoan.errors import EXIT_USAGE, LcoanError, fail, one_line, run_cli

__all__ = ["EXIT_USAGE", "ExportError", "fail", "one_line", "run_cli"]


class ExportError(LcoanError, RuntimeError):
    """A problem the user can fix (arguments, files, shapes); the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
