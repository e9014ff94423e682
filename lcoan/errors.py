"""One error path for the command-line tools: a base class for problems the user can fix, one
exit-status table, and :func:`run_cli`, which turns those problems into one line on stderr.

    from lcoan.errors import LcoanError, run_cli
    class CalibrationError(LcoanError, ValueError): ...
    if __name__ == "__main__":
        run_cli(main)           # main(argv) -> exit status; errors -> "error: <one line>", status 2

Library code raises; only ``run_cli`` (or :func:`exit_status`, for a ``main`` that Python code
calls and that returns its status) prints, so a library caller still gets the exception. Usage
errors take the same line (:class:`ArgumentParser`). Imports nothing heavy (not torch), so every
stage, the Triton launcher included, can use it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Optional, Sequence

# The exit statuses of every tool (app/cli.py's table uses the same numbers).
EXIT_OK = 0           # done
EXIT_FAILED = 1       # ran, but the result failed its check (parity, an input that could not be read)
EXIT_USAGE = 2        # a problem the user can fix: arguments, files, shapes, a missing tool
EXIT_DAMAGED = 3      # an output was left incomplete (app: a video cut short)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, what shells report)

EXIT_CODES = {EXIT_OK: "done", EXIT_FAILED: "check failed", EXIT_USAGE: "user error",
              EXIT_DAMAGED: "output damaged", EXIT_INTERRUPTED: "interrupted"}


class LcoanError(Exception):
    """A problem the user can fix; ``str()`` is one line naming the file or option and the problem."""

    exit_code = EXIT_USAGE


class UsageError(LcoanError, ValueError):
    """A bad option value that argparse cannot see (``--tile 0``, ``--device cuda`` without CUDA)."""


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, LcoanError) and exc.filename and exc.strerror:
        # "[Errno 2] No such file or directory: 'x'" puts the file last and the errno first
        return " ".join(f"{exc.filename}: {exc.strerror}".split())
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def report(message: str, code: int = EXIT_USAGE) -> int:
    """Print the one ``error:`` line and return ``code`` (for a ``main`` that returns its status)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise SystemExit(report(message, code))


Main = Callable[[Optional[Sequence[str]]], Optional[int]]


def exit_status(main: Main, argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)`` and return its exit status; a :class:`LcoanError` (or a missing input
    file) becomes one ``error:`` line and its ``exit_code``, Ctrl-C one ``interrupted`` line and 130.
    Any other exception is a bug and keeps its traceback."""
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (LcoanError, FileNotFoundError) as exc:
        return report(one_line(exc), getattr(exc, "exit_code", EXIT_USAGE))
    return int(status or 0)


def run_cli(main: Main, argv: Optional[Sequence[str]] = None) -> NoReturn:
    """:func:`exit_status`, then exit with it: the ``__main__`` of every tool."""
    raise SystemExit(exit_status(main, argv))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: one line ``error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D401 - argparse API
        fail(f"{message} (see {self.prog} --help)", EXIT_USAGE)
