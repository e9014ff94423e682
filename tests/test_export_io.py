"""Integer graph I/O: the colour conversions (lcoan.color), the rgb8 and i420 graphs against the
float model on real images and a real decoded frame, their metadata, and every --sort/--dtype."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, shared_path
from lcoan import color

CLIP = REPO / "samples" / "sample_clip.mp4"


# --------------------------------------------------------------------------- lcoan.color
def test_bt709_limited_matches_the_published_coefficients():
    # NOTES.md / ITU-R BT.709 8-bit: R = 1.1644 (Y-16) + 1.7927 (V-128), G = 1.1644 (Y-16)
    # - 0.2132 (U-128) - 0.5329 (V-128), B = 1.1644 (Y-16) + 2.1124 (U-128); the module derives
    # them from Kr and Kb only.
    m = np.array(color.yuv_to_rgb_matrix("bt709", "limited")) * 255
    np.testing.assert_allclose(m, [[1.1644, 0, 1.7927], [1.1644, -0.2132, -0.5329], [1.1644, 2.1124, 0]],
                               atol=6e-5)
    # BT.601 full range is JPEG's (JFIF): R = Y + 1.402 (Cr-128), G = Y - 0.344136 (Cb-128) - 0.714136 (Cr-128)
    m = np.array(color.yuv_to_rgb_matrix("bt601", "full")) * 255
    np.testing.assert_allclose(m, [[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], atol=1e-5)


@pytest.mark.parametrize("colorspace", color.COLORSPACES)
@pytest.mark.parametrize("range_", color.RANGES)
def test_flat_colours_survive_the_round_trip(colorspace, range_):
    # Flat colours: chroma filtering plays no part, so only the matrix and the 8-bit rounding do.
    torch.manual_seed(1)
    rgb = torch.rand(64, 3, 1, 1).expand(64, 3, 4, 6).contiguous()
    y, u, v = color.rgb_to_i420(rgb, colorspace, range_)
    assert (y.dtype, y.shape, u.shape, v.shape) == (torch.uint8, (64, 4, 6), (64, 2, 3), (64, 2, 3))
    back = color.i420_to_rgb(y, u, v, colorspace, range_)
    # a code step is 1/219 of Y' (limited) and moves R, G, B by up to ~1.2 levels; half a step of
    # each of Y, Cb, Cr adds up to less than 2 levels
    assert (back - rgb).abs().max().item() * 255 < 2.0
    rgb8 = color.float_to_rgb8(back)
    assert rgb8.shape == (64, 4, 6, 3) and rgb8.dtype == torch.uint8


def test_rgb8_round_trip_is_exact():
    x = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    f = color.rgb8_to_float(x)
    assert f.shape == (2, 3, 5, 7) and f.dtype == torch.float32 and 0 <= f.min() and f.max() <= 1
    assert torch.equal(color.float_to_rgb8(f), x)
    assert torch.equal(color.float_to_rgb8(torch.tensor([-1.0, 2.0, 0.5 / 255, 1.5 / 255]).view(1, 1, 1, 4)
                                           .expand(1, 3, 1, 4)), torch.tensor([0, 255, 0, 2], dtype=torch.uint8)
                       .view(1, 1, 4, 1).expand(1, 1, 4, 3))  # clamp, and ties round to even


def test_chroma_siting_is_left_and_centred():
    c = torch.tensor([[0.0, 4.0], [8.0, 12.0]]).view(1, 1, 2, 2)
    up = color.upsample_chroma(c)[0, 0]
    # rows: 3/4 own + 1/4 neighbour (centred); columns: even = the sample, odd = the mean (co-sited)
    assert up[:, 0].tolist() == [0.0, 2.0, 6.0, 8.0]
    assert up[0].tolist() == [0.0, 2.0, 4.0, 4.0]
    # down-sampling on the same grid keeps a linear ramp across columns and a flat plane
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 4, 8)
    assert color.downsample_chroma(ramp)[0, 0, 0, 1:].tolist() == [2.0, 4.0, 6.0]  # columns 2, 4, 6
    assert torch.equal(color.downsample_chroma(torch.full((1, 2, 4, 6), 3.0)), torch.full((1, 2, 2, 3), 3.0))


def test_odd_sizes_and_unknown_names_are_one_line():
    with pytest.raises(color.ColorError, match="even width and height"):
        color.rgb_to_i420(torch.rand(1, 3, 5, 6))
    y = torch.zeros(1, 4, 6, dtype=torch.uint8)
    with pytest.raises(color.ColorError, match="chroma planes"):
        color.i420_to_rgb(y, torch.zeros(1, 2, 2, dtype=torch.uint8), torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(color.ColorError, match="colour space"):
        color.i420_to_rgb(y, y[:, :2, :3], y[:, :2, :3], colorspace="bt2020")
    with pytest.raises(color.ColorError, match="range"):
        color.rgb_to_i420(torch.rand(1, 3, 4, 6), range="tv")


def _first_frame():
    av = pytest.importorskip("av")
    with av.open(str(CLIP)) as container:
        return next(container.decode(video=0))


def test_matrix_agrees_with_swscale_on_a_real_frame():
    # swscale (yuv420p -> rgb24, untagged stream -> BT.601 limited) repeats chroma samples; with
    # the same repetition our matrix gives its colours within its fixed-point error.
    frame = _first_frame()
    y, u, v = (torch.from_numpy(np.ascontiguousarray(p))[None] for p in
               color.split_yuv420p(frame.to_ndarray(format="yuv420p")))
    assert y.shape[1:] == (frame.height, frame.width) and u.shape[1:] == (frame.height // 2, frame.width // 2)
    sws = frame.to_ndarray(format="rgb24").astype(np.int16)
    m = np.array(color.yuv_to_rgb_matrix("bt601", "limited"))
    rep = lambda p: np.repeat(np.repeat(p[0].numpy().astype(np.float64), 2, 0), 2, 1)  # noqa: E731
    yy, cb, cr = y[0].numpy().astype(np.float64) - 16, rep(u) - 128, rep(v) - 128
    ours = np.stack([m[i][0] * yy + m[i][1] * cb + m[i][2] * cr for i in range(3)], -1)
    diff = np.abs(np.clip(np.round(ours * 255), 0, 255) - sws)
    assert diff.max() <= 3 and (diff <= 1).mean() > 0.7, (diff.max(), (diff <= 1).mean())
    # and the module's own conversion (interpolated chroma) stays close to it on smooth content
    rgb = color.float_to_rgb8(color.i420_to_rgb(y, u, v, "bt601", "limited"))[0].numpy().astype(np.int16)
    assert np.median(np.abs(rgb - sws)) <= 2
