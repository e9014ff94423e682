"""Start and stop the ``tritonserver`` bundled in ``nvidia-pytriton`` (2.51, Python backend only).

    python -m serve.server DIR [--config cpu] [--http-port P --grpc-port P --metrics-port P]
    python -m serve.server DIR --print-command      # the exact command line, nothing started

    with TritonServer(repository, config_name="cpu") as server:   # free loopback ports
        server.grpc_url, server.http_url, server.pid

The server runs from the serving environment that ``make serve-setup`` creates (``.venv-serve``:
numpy < 2, nvidia-pytriton, onnxruntime; ``$LCOAN_SERVE_VENV`` points elsewhere). It listens on
127.0.0.1 only. Three traps of that binary are handled here:

* the Python backend's stub is shipped per Python version; a backend folder holding
  ``libtriton_python.so`` and the stub of the serving venv's Python is assembled for it;
* the stub imports packages from the ``python`` first on ``PATH``: the serving venv's ``bin/``
  goes first;
* the stub links ``libpython3.X.so``; with a pyenv (or other non-system) interpreter the system
  library would be picked, so the interpreter's ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``.

The server is stopped by its PID (SIGTERM, then SIGKILL after a grace period).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lcoan.errors import EXIT_FAILED, ArgumentParser, exit_status, one_line, report, run_cli

from .errors import ServeError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO_ROOT / ".venv-serve"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServingEnv:
    venv: Path
    python: Path
    tritonserver: Path
    backends: Path          # pytriton's backends/ (holds python/libtriton_python.so)
    stub: Path              # triton_python_backend_stub for the venv's Python version
    libdir: str             # the venv interpreter's LIBDIR (for libpython)
    bundled_libs: Path      # nvidia_pytriton.libs: libcudart etc. that the stub finds through its rpath


def serving_venv() -> Path:
    return Path(os.environ.get("LCOAN_SERVE_VENV", DEFAULT_VENV))


def find_serving_env(venv: str | os.PathLike | None = None) -> ServingEnv:
    """The serving venv's interpreter, bundled ``tritonserver`` and Python-backend stub."""
    venv = Path(venv) if venv else serving_venv()
    python = venv / "bin" / "python"
    if not python.exists():
        raise ServeError(f"no serving environment at {venv}: run `make serve-setup` (a venv with numpy<2, "
                         "nvidia-pytriton==0.7.0 and onnxruntime) or set LCOAN_SERVE_VENV")
    probe = ("import sys, sysconfig, pytriton, os; "
             "print(os.path.dirname(pytriton.__file__)); print('%d.%d' % sys.version_info[:2]); "
             "print(sysconfig.get_config_var('LIBDIR') or '')")
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServeError(f"cannot run {python}: {exc}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise ServeError(f"{venv} has no nvidia-pytriton ({last}); run `make serve-setup`")
    pkg, version, libdir = (out.stdout.strip().splitlines() + ["", "", ""])[:3]
    root = Path(pkg) / "tritonserver"
    binary, backends = root / "bin" / "tritonserver", root / "backends"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    for path, what in ((binary, "tritonserver binary"), (backends / "python" / "libtriton_python.so",
                                                         "Python backend"), (stub, f"Python {version} backend stub")):
        if not path.is_file():
            raise ServeError(f"nvidia-pytriton in {venv} has no {what} ({path})")
    return ServingEnv(venv, python, binary, backends, stub, libdir, Path(pkg).parent / "nvidia_pytriton.libs")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def backend_directory(env: ServingEnv, folder: Path) -> Path:
    """``folder/python/`` with the backend library, its utils and the stub of the venv's Python."""
    dest = folder / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for item in (env.backends / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
    shutil.copy2(env.stub, dest / "triton_python_backend_stub")
    return folder


def server_environ(env: ServingEnv, base: dict | None = None) -> dict:
    environ = dict(os.environ if base is None else base)
    environ["PATH"] = f"{env.venv / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
    # The stub is copied out of the wheel, so its $ORIGIN-relative rpath no longer reaches the
    # bundled libcudart: name that folder explicitly.
    libs = ([env.libdir] if env.libdir else []) + [str(env.bundled_libs)]
    if environ.get("LD_LIBRARY_PATH"):
        libs.append(environ["LD_LIBRARY_PATH"])
    environ["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    environ.pop("PYTHONPATH", None)      # the stub must see the serving venv, not the caller's packages
    environ.pop("VIRTUAL_ENV", None)
    return environ


def server_command(env: ServingEnv, repository: Path, backends: Path, *, config_name: str | None,
                   http_port: int, grpc_port: int, metrics_port: int, log_verbose: int = 0) -> list[str]:
    cmd = [str(env.tritonserver), f"--model-repository={repository}", f"--backend-directory={backends}",
           f"--http-address={LOOPBACK}", f"--http-port={http_port}",
           f"--grpc-address={LOOPBACK}", f"--grpc-port={grpc_port}",
           f"--metrics-address={LOOPBACK}", f"--metrics-port={metrics_port}",
           "--allow-metrics=true", "--allow-gpu-metrics=false", "--exit-on-error=true",
           "--strict-readiness=true", f"--log-verbose={log_verbose}"]
    if config_name:
        cmd.append(f"--model-config-name={config_name}")
    return cmd


class TritonServer:
    """The bundled ``tritonserver`` on loopback ports, started on ``start()`` / ``with``."""

    def __init__(self, repository: str | os.PathLike, *, config_name: str | None = "cpu", model: str = "lcoan",
                 venv: str | os.PathLike | None = None, http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None,
                 startup_timeout_s: float = 120.0, log_path: str | os.PathLike | None = None,
                 backend_dir: str | os.PathLike | None = None):
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise ServeError(f"{self.repository}: no such model repository")
        self.config_name, self.model = config_name, model
        self.env = find_serving_env(venv)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="lcoan_triton_")
        self.log_path = Path(log_path) if log_path else Path(self._tmp.name) / "tritonserver.log"
        self.backend_dir = Path(backend_dir).resolve() if backend_dir else Path(self._tmp.name) / "backends"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return server_command(self.env, self.repository, self.backend_dir,
                              config_name=self.config_name, http_port=self.http_port,
                              grpc_port=self.grpc_port, metrics_port=self.metrics_port)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> "TritonServer":
        backend_directory(self.env, self.backend_dir)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=server_environ(self.env),
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail(6).replace("\n", " | ")
                raise ServeError(f"tritonserver exited with status {self.proc.returncode} while starting: {tail}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise ServeError(f"tritonserver was not ready within {self.startup_timeout_s:.0f} s; log: {self.log_path}")

    def ready(self) -> bool:
        url = f"http://{self.http_url}/v2/models/{self.model}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM to the server's PID, SIGKILL after ``timeout_s``; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _run(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m serve.server", description=__doc__.split("\n\n")[0])
    p.add_argument("repository", help="model repository (python -m export.to_triton --out DIR)")
    p.add_argument("--config", default="cpu", help="--model-config-name (default cpu: the only config "
                   "the bundled server, which has no TensorRT backend, can load)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--print-command", action="store_true", help="assemble the backend folder, print the "
                   "command line that serves the repository, and exit")
    p.add_argument("--backend-dir", help="where the Python backend folder is assembled (default: a temporary "
                   "folder; with --print-command: ./triton_backends)")
    args = p.parse_args(argv)
    # A missing serving venv or repository: ServeError, one line, status 2 (lcoan.errors).
    server = TritonServer(args.repository, config_name=args.config or None, http_port=args.http_port,
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                          backend_dir=args.backend_dir or ("triton_backends" if args.print_command else None))
    if args.print_command:
        backend_directory(server.env, server.backend_dir)
        env = server_environ(server.env, {})
        print(f"PATH={shlex.quote(env['PATH'].rstrip(os.pathsep))}:$PATH "
              f"LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])} {shlex.join(server.command())}")
        server.close()
        return 0
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    # SIGTERM too (and SIGINT, which shells ignore in background jobs): the server runs in its own
    # session and would otherwise outlive this process.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        server.start()
    except KeyboardInterrupt:
        server.close()
        return EXIT_FAILED
    except ServeError as exc:  # the server itself failed to come up: the command was right
        server.close()
        return report(one_line(exc), EXIT_FAILED)
    print(f"tritonserver (PID {server.pid}) serving {args.repository} with config {args.config}: "
          f"HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}; Ctrl-C stops it",
          file=sys.stderr)
    try:
        while server.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        status = server.stop()
        server._tmp.cleanup()
    return 0 if status in (0, -signal.SIGTERM, None) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """``python -m serve.server``: returns the exit status; errors are one line
    (:func:`lcoan.errors.exit_status`)."""
    return exit_status(_run, argv)


if __name__ == "__main__":
    run_cli(_run)
