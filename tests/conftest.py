import os
import signal
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LCOAN_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


# Helpers are imported as `from conftest import REPO, shared_path` (pytest puts tests/ on sys.path);
# `tests.conftest` would load this file a second time under another name.
@pytest.fixture(scope="module")
def tiny():
    """The ``tiny`` preset at x2 in eval mode, seed 0, built once per test module."""
    from lcoan import build_model
    torch.manual_seed(0)
    return build_model("tiny", scale=2).eval()


@pytest.fixture(scope="module")
def tiny_weights(tiny, tmp_path_factory) -> Path:
    """``tiny`` saved as ``tiny_x2.safetensors`` (config in the metadata), once per test module."""
    from lcoan.checkpoint import save_safetensors
    path = tmp_path_factory.mktemp("weights") / "tiny_x2.safetensors"
    save_safetensors(tiny, path)
    return path


# Components CI installs (.ci/run): there a missing one must fail the run, not skip it silently.
REQUIRE_ENV = {"gst": "LCOAN_REQUIRE_GST", "triton": "LCOAN_REQUIRE_TRITON"}


def required(component: str) -> bool:
    """Whether CI asked for ``component`` (``gst``, ``triton``): ``LCOAN_REQUIRE_<X>`` set, not ``0``."""
    return os.environ.get(REQUIRE_ENV[component], "") not in ("", "0")


def skip_unless_required(component: str, reason: str, *, module: bool = False):
    """Skip with ``reason``, or fail with it when :func:`required` says CI needs ``component``."""
    if required(component):
        pytest.fail(f"{REQUIRE_ENV[component]} is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def wait_until(ready, deadline_s: float, what: str, alive=lambda: True, poll_s: float = 0.2) -> None:
    """Poll ``ready()`` until it holds; fail naming ``what`` after ``deadline_s`` or once ``alive()``
    is false (a server that exited will never become ready)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert alive(), f"{what}: exited before it was ready"
        if ready():
            return
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not ready after {deadline_s:.0f} s")


def interrupt_when_ready(proc, ready, settle_s: float, timeout: float = 60) -> bytes:
    """Ctrl-C ``proc`` once ``ready()`` holds (or it exits, or ``timeout`` passes) and ``settle_s``
    more seconds went by, as a user would; returns its stderr. The process never outlives this."""
    try:
        deadline = time.time() + timeout
        while not ready() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err
