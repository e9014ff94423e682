"""One-line errors for the export command-line tools.

Library functions raise :class:`ExportError` (or ``lcoan.CheckpointError`` for weights files);
``run_cli`` turns either into a single ``error: ...`` line on stderr and exit status 2, with no
traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

EXIT_USAGE = 2


class ExportError(RuntimeError):
    """A problem the user can fix (arguments, files, shapes); the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def fail(message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run ``main(argv)``; user errors become one line on stderr and exit status 2."""
    from lcoan import CheckpointError

    try:
        status = main(argv)
    except (ExportError, CheckpointError, FileNotFoundError) as exc:
        fail(one_line(exc))
    raise SystemExit(int(status or 0))
