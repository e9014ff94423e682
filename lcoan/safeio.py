"""Output files that never destroy data: the one place where this project writes a final file.

* :func:`atomic_write` / :func:`atomic_output`: the file is written under a temporary name in the
  target's own folder (same file system, so the rename is atomic), flushed to disk, given the
  usual mode (``0666 & ~umask``; ``mkstemp`` would leave ``0600``) and renamed over the target
  with ``os.replace``. A failure at any point (full disk, Ctrl-C, crash, an exception in the
  writer) removes the temporary file and leaves an earlier file at the target untouched.
* :func:`refuse_overwrite`: an output that is one of the inputs (same resolved path, or the same
  file through a hard link, a symlink or a bind mount: ``os.path.samefile``) is refused.
* :func:`check_writable`: before any work, whether an output can be written (its folder exists or
  can be made, a file can be created there, free space and the file-size limit cover it).
* :func:`remove_orphans`: temporary files (and staging folders) that a killed process left beside
  a target. A live writer holds an ``flock`` on its temporary, which the kernel drops when the
  process dies, so a second run never removes the temporary of a first one still writing.
  :func:`check_writable` calls it, so the rerun after a ``kill -9`` leaves no stray file.
* :func:`atomic_folder`: :func:`atomic_output` for a folder (a Triton model repository).
* :func:`exclusive_output`: a lock file beside an output (``.<name>.lock``, an exclusive
  ``flock``) held for a whole run, so that a second run writing the same output is refused
  instead of silently losing the race to the rename.
* :class:`OutputError`: one line naming the file and the problem ("no space left on device").

Temporary names are ``.<name>.<random>.tmp<suffix>``: hidden, recognisable for
:func:`remove_orphans`, and ending in the target's suffix so that writers which pick a format
from the file name (FFmpeg muxers, Pillow) still pick the right one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union
from .errors import LcoanError

try:
    import fcntl
except ImportError:  # not POSIX: no locks; orphans are then removed whatever their age
    fcntl = None

__all__ = ["OutputError", "SameFileError", "AtomicFile", "atomic_write", "atomic_output", "refuse_overwrite",
           "same_file", "remove_orphans", "temp_prefix", "describe_os_error", "check_writable", "atomic_folder",
           "exclusive_output"]

PathLike = Union[str, os.PathLike]

_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EFBIG: "no space left: file size limit reached",
             errno.EDQUOT: "no space left: disk quota exceeded"}


class OutputError(LcoanError, OSError):
    """An output that cannot be written; ``str()`` is one line naming the file and the problem."""

    def __init__(self, path: PathLike, problem: str):
        self.path, self.problem = str(path), " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")

    def __str__(self) -> str:  # OSError's own __str__ would add errno formatting
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class SameFileError(OutputError):
    """The output is one of the inputs."""


def describe_os_error(exc: BaseException) -> str:
    """A short reason for an OSError; full disks and size limits always say "no space left"."""
    code = getattr(exc, "errno", None)
    if code in _NO_SPACE:
        return _NO_SPACE[code]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def temp_prefix(path: PathLike) -> str:
    return f".{Path(path).name}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(folder, "cannot create the output folder: a file of that name exists") from None
    except OSError as exc:
        raise OutputError(folder, f"cannot create the output folder: {describe_os_error(exc)}") from None


class AtomicFile:
    """A temporary file beside ``path`` that :meth:`commit` renames to ``path``.

    For writers that stay open for a while (a video encoder): open ``tmp``, write, close it, then
    :meth:`commit`; :meth:`discard` (or a failed commit) removes ``tmp`` and leaves ``path`` as it
    was. ``OSError`` becomes a one-line :class:`OutputError` naming ``path``.
    """

    def __init__(self, path: PathLike, mode: int | None = None):
        self.path, self.mode, self.done = Path(path), mode, False
        _mkdir(self.path.parent)
        try:
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=".tmp" + self.path.suffix,
                                       dir=self.path.parent)
        except OSError as exc:
            raise OutputError(self.path, f"cannot write: {describe_os_error(exc)}") from None
        self._lock = _hold(fd)  # until commit or discard: "in use" for remove_orphans
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        if self.done:
            return self.path
        try:
            with open(self.tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(self.tmp, (0o666 & ~_umask()) if self.mode is None else self.mode)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise OutputError(self.path, f"cannot write: {describe_os_error(exc)}") from None
        except BaseException:  # Ctrl-C between the last write and the rename
            self.discard()
            raise
        self.done = True
        self._release()
        return self.path

    def discard(self) -> None:
        self.done = True
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        self._release()

    def _release(self) -> None:
        fd, self._lock = getattr(self, "_lock", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    __del__ = _release  # an AtomicFile dropped uncommitted leaves an orphan, no longer in use


@contextlib.contextmanager
def atomic_output(path: PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it becomes ``path``.

    Whatever the block writes to the temporary path is fsynced and renamed over ``path`` when the
    block ends without an exception; on an exception (or KeyboardInterrupt) the temporary file is
    removed and ``path`` is left as it was. ``OSError`` from the block or the rename becomes a
    one-line :class:`OutputError` naming ``path``.
    """
    out = AtomicFile(path, mode)
    try:
        yield out.tmp
    except OutputError:
        out.discard()
        raise
    except OSError as exc:
        out.discard()
        raise OutputError(out.path, f"cannot write: {describe_os_error(exc)}") from None
    except BaseException:
        out.discard()
        raise
    out.commit()


def atomic_write(path: PathLike, data: Union[bytes, str, Callable[[Path], object]], mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``.

    ``data`` is ``bytes``, ``str`` (UTF-8) or a callable ``write(tmp_path)`` that writes the file.
    Prefer bytes where a library can serialise to memory: a plain ``write`` reports a full disk as
    ``ENOSPC``, where some C++ writers only say ``unexpected pos``.
    """
    path = Path(path)
    with atomic_output(path, mode) as tmp:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
    return path


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (resolved path or same inode)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # symlink loops
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def refuse_overwrite(output: PathLike, inputs: Iterable[PathLike], what: str = "output") -> None:
    """Raise :class:`SameFileError` if ``output`` is one of ``inputs``.

    Every tool calls this for each file or folder it writes, before it reads anything, so that a
    run never writes over its own input, whatever spelling, symlink or hard link names it.
    """
    for item in inputs:
        if item is not None and same_file(output, item):
            raise SameFileError(output, f"the {what} is the input '{item}'; refusing to overwrite it")


def check_writable(path: PathLike, need_bytes: int | None = None, what: str = "output") -> Path:
    """Raise a one-line :class:`OutputError` now if ``path`` could not be written later.

    For the tools to call on every output before they load a model or read data: the output is
    not a folder; its folder exists or is created (as :func:`atomic_write` would); a file can be
    created in it (a probe, removed at once: permissions, read-only file systems, quotas); and,
    with ``need_bytes`` (an estimate), the free space and the file-size limit (``ulimit -f``)
    allow that many bytes. The write itself stays atomic: this only moves the usual failures to
    before the work.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, f"is a folder; the {what} needs a file name")
    _mkdir(path.parent)
    remove_orphans(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(path, f"cannot write: {describe_os_error(exc)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    if need_bytes:
        try:
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = None
        if free is not None and free < need_bytes:
            raise OutputError(path, f"no space left on device: {free >> 20} MiB free, the {what} needs about "
                                    f"{max(1, need_bytes >> 20)} MiB")
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        except (ImportError, OSError, ValueError):
            soft = None
        if soft is not None and soft != getattr(resource, "RLIM_INFINITY", -1) and 0 <= soft < need_bytes:
            raise OutputError(path, f"no space left: file size limit reached (ulimit -f allows {soft} bytes, "
                                    f"the {what} needs about {need_bytes})")
    return path


def _hold(fd: int) -> int:
    """Take an exclusive ``flock`` on ``fd`` (a temporary file or staging folder) and return it."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _in_use(entry: Path) -> bool:
    """Whether a live process holds the lock of a temporary (see :class:`AtomicFile`)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(entry, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def remove_orphans(path: PathLike) -> list[Path]:
    """Remove the temporaries that an interrupted write of ``path`` left behind: files and staging
    folders named ``.<name>.<random>.tmp...`` that no live writer holds."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = temp_prefix(path)
    for entry in path.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and ".tmp" in name[len(prefix):]) or _in_use(entry):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on a clean exit it replaces ``path``.

    On an exception (or Ctrl-C) the staging folder is removed and ``path`` is left as it was; a
    kill leaves a staging folder that the next :func:`remove_orphans` of ``path`` removes. An
    earlier ``path`` is moved aside and removed after the rename (two renames: a kill between
    them leaves no ``path``, never a mixed one).
    """
    path = Path(path)
    _mkdir(path.parent)
    remove_orphans(path)
    try:
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise OutputError(path, f"cannot write: {describe_os_error(exc)}") from None
    lock, aside = _hold(os.open(staging, os.O_RDONLY)), None
    try:
        yield staging
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
            os.replace(path, aside / path.name)
        os.replace(staging, path)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException as exc:
        if aside is not None and not path.exists():  # the rename failed: put the earlier one back
            with contextlib.suppress(OSError):
                os.replace(aside / path.name, path)
        for folder in (staging, aside):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(path, f"cannot write: {describe_os_error(exc)}") from None
        raise
    finally:
        os.close(lock)


@contextlib.contextmanager
def exclusive_output(path: PathLike) -> Iterator[Path]:
    """Hold ``.<name>.lock`` beside ``path`` for the block; a second holder gets a one-line
    :class:`OutputError`. The file is removed on the way out; after a kill the kernel drops the
    ``flock`` and the next run takes the file over. The name has no ``.tmp``, so
    :func:`remove_orphans` never touches it."""
    path = Path(path)
    lock = path.parent / (temp_prefix(path) + "lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(path, f"cannot write: {describe_os_error(exc)}") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(path, f"another run is writing this output (it holds {lock}); "
                                    "refusing to write it too") from None
        except OSError:  # a file system without locks: nothing to detect with
            break
        try:  # the holder may have removed the file between our open and flock: lock the new one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except OSError:
            pass
        os.close(fd)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still held: a waiter that opened it sees another inode and retries
        os.close(fd)
