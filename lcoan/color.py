"""Colour and pixel-layout conversions between video frames and the network, in torch.

One home for the conversions that the integer-I/O graphs carry inside them (``export.to_onnx
--io rgb8|i420``) and that the app's torch backend runs on the device, so that a graph and the
eager model see the same pixels. Every function is made of plain tensor ops with no Python
branch on tensor values: it traces into ONNX (Slice, Concat, Reshape, Round, Clip, Cast) and runs
on CPU or CUDA as it is.

    x = rgb8_to_float(frame)                  # uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]
    frame = float_to_rgb8(model(x))           # clamp, scale, round -> uint8 (N, sH, sW, 3)
    rgb = i420_to_rgb(y, u, v, "bt709", "limited")   # planes -> float32 (N, 3, H, W) in [0, 1]
    y, u, v = rgb_to_i420(model(rgb), "bt709", "limited")

Colour (ITU-R BT.601 / BT.709): every coefficient is derived from the luma weights Kr and Kb,
    Y' = Kr R + Kg G + Kb B,  Kg = 1 - Kr - Kb,
    Pb = (B - Y') / (2 (1 - Kb)),  Pr = (R - Y') / (2 (1 - Kr))     (Pb, Pr in [-1/2, 1/2])
and the 8-bit code values of the range:
    limited ("TV", MPEG): Y = 16 + 219 Y',  Cb = 128 + 224 Pb,  Cr = 128 + 224 Pr
    full ("PC", JPEG):    Y = 255 Y',       Cb = 128 + 255 Pb,  Cr = 128 + 255 Pr
(BT.709 limited gives R = 1.1644 (Y-16) + 1.7927 (Cr-128), the numbers of NOTES.md.)

Chroma siting (4:2:0): the H.264 / MPEG-2 default, ``chroma_sample_loc_type`` 0 ("left"): a
chroma sample sits on the even luma columns (co-sited horizontally) and halfway between two luma
rows (centred vertically). Up-sampling is linear in both directions and follows that grid:
    rows:    out[2k] = 3/4 c[k] + 1/4 c[k-1],   out[2k+1] = 3/4 c[k] + 1/4 c[k+1]
    columns: out[2k] = c[k],                    out[2k+1] = 1/2 (c[k] + c[k+1])
Down-sampling takes the matching filters: the mean of rows 2k and 2k+1, then [1/4, 1/2, 1/4]
centred on column 2k. Edges repeat the last sample. 4:2:0 needs an even height and width; odd
sizes are refused (:class:`ColorError`), never padded silently.

uint8 tensors meet only a Cast (the first op on an input, the last on an output): TensorRT takes
uint8 at a network's I/O and in Cast alone, so layout changes and slices run in float32.

Rounding is to nearest, ties to even (``torch.round``, ONNX ``Round``); values are clamped before
the cast to uint8. ``i420_to_rgb`` clamps its RGB to [0, 1]: the network was trained on that
range, and limited-range codes outside [16, 235] / [16, 240] (or colours outside the RGB cube)
have no image in it.
"""
from __future__ import annotations

import torch

from .graph_io import COLORSPACES, DEFAULT_COLORSPACE, DEFAULT_RANGE, RANGES, ColorError

__all__ = ["COLORSPACES", "RANGES", "DEFAULT_COLORSPACE", "DEFAULT_RANGE", "ColorError", "luma_weights",
           "range_codes", "yuv_to_rgb_matrix", "rgb8_to_float", "float_to_rgb8", "i420_to_rgb", "rgb_to_i420",
           "upsample_chroma", "downsample_chroma", "split_yuv420p", "check_i420_size"]

# (Kr, Kb) of each colour space: BT.601 (SD, and what swscale assumes for untagged streams) and
# BT.709 (HD).
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
# (Y offset, Y span, chroma span) in 8-bit code values; chroma is centred on 128 in both ranges.
_RANGE_CODES = {"limited": (16.0, 219.0, 224.0), "full": (0.0, 255.0, 255.0)}
_CHROMA_ZERO = 128.0


def _check(colorspace: str, range: str) -> None:  # noqa: A002 - the colour term, as in the CLI
    if colorspace not in _KR_KB:
        raise ColorError(f"colour space must be one of {COLORSPACES}, got {colorspace!r}")
    if range not in _RANGE_CODES:
        raise ColorError(f"colour range must be one of {RANGES}, got {range!r}")


def luma_weights(colorspace: str) -> tuple[float, float, float]:
    """(Kr, Kg, Kb) of ``colorspace``."""
    _check(colorspace, DEFAULT_RANGE)
    kr, kb = _KR_KB[colorspace]
    return kr, 1.0 - kr - kb, kb


def range_codes(range: str) -> tuple[float, float, float]:  # noqa: A002
    """(Y offset, Y span, chroma span) of ``range`` in 8-bit code values."""
    _check(DEFAULT_COLORSPACE, range)
    return _RANGE_CODES[range]


def yuv_to_rgb_matrix(colorspace: str, range: str) -> list[list[float]]:  # noqa: A002
    """The 3x3 matrix M with RGB = M @ (Y - off, Cb - 128, Cr - 128) on 8-bit codes (RGB in [0, 1])."""
    _check(colorspace, range)
    kr, kg, kb = luma_weights(colorspace)
    off, ys, cs = _RANGE_CODES[range]
    rv, bu = 2 * (1 - kr), 2 * (1 - kb)
    gu, gv = bu * kb / kg, rv * kr / kg
    return [[1 / ys, 0.0, rv / cs], [1 / ys, -gu / cs, -gv / cs], [1 / ys, bu / cs, 0.0]]


# ---- RGB, uint8 NHWC <-> float NCHW ---------------------------------------------------------

def rgb8_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return x.to(torch.float32).permute(0, 3, 1, 2) / 255.0


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """Codes in float -> uint8: round to nearest (ties to even), clamp to [0, 255], cast."""
    return torch.clamp(torch.round(x), 0.0, 255.0).to(torch.uint8)


def float_to_rgb8(x: torch.Tensor) -> torch.Tensor:
    """float (N, 3, H, W), nominally [0, 1] -> uint8 (N, H, W, 3): clamp, x255, round.

    Computed in float32 whatever ``x``'s dtype (an FP16 network's output is widened first)."""
    x = torch.clamp(x.to(torch.float32), 0.0, 1.0) * 255.0
    return _to_u8(x.permute(0, 2, 3, 1))


# ---- 4:2:0 chroma -----------------------------------------------------------------------------

def _next(c: torch.Tensor, dim: int) -> torch.Tensor:
    """c shifted by one towards lower indices along ``dim`` (-1 or -2), last sample repeated."""
    if dim == -1:
        return torch.cat([c[..., 1:], c[..., -1:]], dim=-1)
    return torch.cat([c[..., 1:, :], c[..., -1:, :]], dim=-2)


def _prev(c: torch.Tensor, dim: int) -> torch.Tensor:
    """c shifted by one towards higher indices along ``dim`` (-1 or -2), first sample repeated."""
    if dim == -1:
        return torch.cat([c[..., :1], c[..., :-1]], dim=-1)
    return torch.cat([c[..., :1, :], c[..., :-1, :]], dim=-2)


def upsample_chroma(c: torch.Tensor) -> torch.Tensor:
    """float (N, C, h, w) chroma -> (N, C, 2h, 2w) on the luma grid (left-sited, centred vertically)."""
    top = 0.75 * c + 0.25 * _prev(c, -2)                          # luma row 2k
    bottom = 0.75 * c + 0.25 * _next(c, -2)                       # luma row 2k+1
    c = torch.stack([top, bottom], dim=-2).flatten(-3, -2)        # (N, C, 2h, w)
    mid = 0.5 * (c + _next(c, -1))                                # luma column 2k+1
    return torch.stack([c, mid], dim=-1).flatten(-2)              # (N, C, 2h, 2w)


def downsample_chroma(c: torch.Tensor) -> torch.Tensor:
    """float (N, C, 2h, 2w) chroma on the luma grid -> (N, C, h, w) on the 4:2:0 grid."""
    c = 0.5 * (c[..., 0::2, :] + c[..., 1::2, :])                # centred between rows 2k, 2k+1
    even, odd = c[..., 0::2], c[..., 1::2]                        # columns 2k, 2k+1
    return 0.5 * even + 0.25 * odd + 0.25 * _left(even, odd)


def _left(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Column 2k-1 for each k, column 0 standing in for column -1."""
    return torch.cat([even[..., :1], odd[..., :-1]], dim=-1)


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def check_i420_size(height: int, width: int, what: str = "frame") -> None:
    """4:2:0 needs an even height and width; one line otherwise."""
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise ColorError(f"{what} is {width}x{height}: 4:2:0 (I420) needs an even width and height "
                         "of at least 2; crop or pad it by one pixel")


# ---- I420 <-> RGB -----------------------------------------------------------------------------

def i420_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, colorspace: str = DEFAULT_COLORSPACE,
                range: str = DEFAULT_RANGE) -> torch.Tensor:  # noqa: A002
    """I420 planes -> float32 RGB (N, 3, H, W) in [0, 1].

    ``y`` uint8 (N, H, W), ``u`` (Cb) and ``v`` (Cr) uint8 (N, H/2, W/2); H and W even.
    """
    _check(colorspace, range)
    if not _tracing():
        check_i420_size(y.shape[-2], y.shape[-1])
        if tuple(u.shape[-2:]) != (y.shape[-2] // 2, y.shape[-1] // 2) or u.shape != v.shape:
            raise ColorError(f"chroma planes {tuple(u.shape)} and {tuple(v.shape)} do not match luma "
                             f"{tuple(y.shape)}: I420 chroma is half the luma's height and width")
    m = yuv_to_rgb_matrix(colorspace, range)
    off = _RANGE_CODES[range][0]
    luma = (y.to(torch.float32) - off).unsqueeze(1) * m[0][0]                       # (N, 1, H, W) Y'
    chroma = torch.stack([u.to(torch.float32), v.to(torch.float32)], dim=1) - _CHROMA_ZERO  # (N, 2, H/2, W/2)
    chroma = upsample_chroma(chroma)                                                # (N, 2, H, W)
    cb, cr = chroma[:, 0:1], chroma[:, 1:2]
    r = luma + m[0][2] * cr
    g = luma + m[1][1] * cb + m[1][2] * cr
    b = luma + m[2][1] * cb
    return torch.clamp(torch.cat([r, g, b], dim=1), 0.0, 1.0)


def rgb_to_i420(rgb: torch.Tensor, colorspace: str = DEFAULT_COLORSPACE,
                range: str = DEFAULT_RANGE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: A002
    """float RGB (N, 3, H, W), nominally [0, 1] -> I420 planes ``(y, u, v)``, uint8.

    RGB is clamped to [0, 1] and converted in float32 whatever its dtype; ``y`` is (N, H, W),
    ``u`` and ``v`` are (N, H/2, W/2), down-sampled on the grid :func:`upsample_chroma` reads.
    """
    _check(colorspace, range)
    if not _tracing():
        check_i420_size(rgb.shape[-2], rgb.shape[-1])
    kr, kg, kb = luma_weights(colorspace)
    off, ys, cs = _RANGE_CODES[range]
    rgb = torch.clamp(rgb.to(torch.float32), 0.0, 1.0)
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    luma = kr * r + kg * g + kb * b                                                 # (N, 1, H, W) Y'
    pb = (b - luma) * (cs / (2 * (1 - kb)))
    pr = (r - luma) * (cs / (2 * (1 - kr)))
    chroma = downsample_chroma(torch.cat([pb, pr], dim=1)) + _CHROMA_ZERO           # (N, 2, H/2, W/2)
    return _to_u8((luma * ys + off)[:, 0]), _to_u8(chroma[:, 0]), _to_u8(chroma[:, 1])


def split_yuv420p(frame):
    """The planes of a stacked ``yuv420p`` array, (..., H*3/2, W) -> (y, u, v) views or copies.

    The layout of PyAV's ``VideoFrame.to_ndarray(format="yuv420p")``: H rows of Y, then the
    H/2 x W/2 U plane and the V plane, each packed as H/4 rows of W. Works on numpy arrays and
    torch tensors (contiguous in the last two dims)."""
    rows, width = frame.shape[-2], frame.shape[-1]
    if rows % 3 or (rows // 3) % 2 or width % 2:
        raise ColorError(f"a stacked yuv420p array has H*3/2 rows of even width, got {rows}x{width}")
    h = rows * 2 // 3
    lead = tuple(frame.shape[:-2])
    y = frame[..., :h, :]
    u = frame[..., h:h + h // 4, :].reshape(*lead, h // 2, width // 2)
    v = frame[..., h + h // 4:, :].reshape(*lead, h // 2, width // 2)
    return y, u, v
