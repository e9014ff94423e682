"""The native CPU kernels of the attention (lcoan/model/csrc): built here with the system's C++
compiler, compared with the PyTorch ops they replace, and the fallback when they cannot be built."""
import os
import subprocess
import sys

import pytest
import torch

from lcoan import build_model
from lcoan.model import coa, lsp, native
from lcoan.model.lsp import sparse_pattern
from lcoan.model.sort import stable_sort

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler: the PyTorch ops run instead")


def _pattern(batch, length, window, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(batch, length, 8, generator=g) * 2
    values = torch.randn(batch, length, channels, generator=g)
    perm, inverse = stable_sort(torch.randint(0, 6, (batch, length), generator=g), 6)
    with torch.no_grad():
        return sparse_pattern(queries, perm, inverse, window), values


@pytest.mark.parametrize("batch, length, window, channels", [
    (1, 5, 8, 16),       # below one window: the sequence repeats
    (2, 301, 16, 32),    # padding, batch > 1
    (1, 1000, 40, 64),   # w not a multiple of the 6-row tile
    (3, 520, 24, 128),
    (2, 4100, 64, 32),   # above TensorRT's 3840 TopK cap, batch > 1
])
@pytest.mark.parametrize("threads", [1, 3])
def test_window_kernel_equals_gather_and_matmul(batch, length, window, channels, threads, monkeypatch):
    pattern, values = _pattern(batch, length, window, channels)
    with torch.no_grad():
        monkeypatch.setenv("LCOAN_NATIVE", "0")
        assert not pattern.runs_native(values)
        expected = pattern.mixed(values)
        monkeypatch.setenv("LCOAN_NATIVE", "1")
        assert pattern.runs_native(values)
        out = torch.empty(batch, pattern.weights.shape[1], window, channels)
        native.window_apply(pattern.weights, values.reshape(-1, channels), pattern.keys_index(), out, threads)
    torch.testing.assert_close(out.reshape(batch, -1, channels), expected, atol=1e-5, rtol=1e-5)


def test_window_kernel_declines_what_it_has_no_tile_for():
    pattern, values = _pattern(1, 100, 8, 24)
    with torch.no_grad():
        assert not pattern.runs_native(values)  # 24 channels: Gather + MatMul instead
        assert pattern.mixed(values).shape == (1, 104, 24)
    assert not pattern.runs_native(values.requires_grad_())


@pytest.mark.parametrize("channels, height, width", [(64, 17, 23), (32, 9, 8), (24, 13, 11), (16, 64, 70)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("threads", [1, 2])
def test_gather_add_kernel_equals_the_torch_ops(channels, height, width, layout, threads, monkeypatch):
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, height, width, generator=g).contiguous(memory_format=layout)
    rows = torch.randn(2, height * width + 9, channels, generator=g)
    index = torch.stack([torch.randperm(height * width, generator=g) for _ in range(2)])
    expected = x + 0.1 * torch.stack([rows[b, index[b]] for b in range(2)]).reshape(
        2, height, width, channels).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = native.gather_add(x, rows, index, 0.1, threads)
        monkeypatch.setenv("LCOAN_NATIVE", "0")
        assert native.gather_add(x, rows, index, 0.1) is None
        blocked = coa._add_gathered(x, rows, index, 0.1)
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(blocked, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_model_with_and_without_the_kernels(layout, monkeypatch):
    torch.manual_seed(0)
    model = build_model("tiny", scale=2).eval().to(memory_format=layout)
    x = torch.rand(2, 3, 45, 38).contiguous(memory_format=layout)
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setenv("LCOAN_NATIVE", "0")
        plain = model(x)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_no_compiler_means_the_torch_ops_and_one_warning(tmp_path):
    code = (
        "import warnings, torch\n"
        "from lcoan import build_model\n"
        "from lcoan.model import native\n"
        "m = build_model('tiny').eval()\n"
        "with warnings.catch_warnings(record=True) as caught, torch.no_grad():\n"
        "    warnings.simplefilter('always')\n"
        "    y = m(torch.rand(1, 3, 20, 20)); m(torch.rand(1, 3, 20, 20))\n"
        "assert native.library() is None and torch.isfinite(y).all()\n"
        "msgs = [str(w.message) for w in caught if 'native attention kernel' in str(w.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "print(msgs[0])\n"
    )
    env = dict(os.environ, CXX="no-such-compiler", LCOAN_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no C++ compiler (no-such-compiler)" in proc.stdout


def test_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("LCOAN_CACHE_DIR", str(tmp_path))
    path = native.build()
    assert path.parent == tmp_path / "native" and path.exists()
    stamp = path.stat().st_mtime_ns
    assert native.build() == path and path.stat().st_mtime_ns == stamp  # not rebuilt
    assert not list(path.parent.glob("tmp*")), "no half-written build left behind"


def test_int32_sort_indices_reach_the_kernels_as_int64(monkeypatch):
    from lcoan.model.sort import counting_sort
    torch.manual_seed(0)
    model = build_model("tiny", scale=2).eval()
    model.set_sort(counting_sort)  # the exported sort's int32 form, run eagerly
    x = torch.rand(1, 3, 31, 29)
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setenv("LCOAN_NATIVE", "0")
        plain = model(x)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_flop_counting_sees_the_window_products():
    """FlopCounterMode is a dispatch mode: under it the PyTorch ops run, so their FLOPs count."""
    from benchmarks.flops import mflops_per_pixel
    with_kernels = mflops_per_pixel(build_model("edge", scale=2))
    assert with_kernels > 2.5  # edge: 2.58 MFLOP per LR pixel, attention included
    assert with_kernels - mflops_per_pixel(build_model("edge", scale=2, attention="none")) > 0.3
