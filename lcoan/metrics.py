"""Benchmark metrics as used in the SR literature (EDSR/RCAN evaluation).

* :func:`rgb_to_y`: ``Y = 16/255 + (65.738 R + 129.057 G + 25.064 B) / 256`` on RGB in ``[0, 1]``.
* :func:`psnr_y`: the SR image is quantised to 8-bit levels first (the HR image too, which leaves
  8-bit ground truth unchanged apart from float32 representation error), both are converted to Y, ``shave`` pixels are removed at each border (``shave = scale`` for benchmarks), and
  ``PSNR = 10 log10(1 / MSE)`` (peak 1 on ``[0, 1]`` data).
* :func:`ssim_y`: MATLAB ``ssim`` / ``ssim_index`` on Y in ``[0, 255]`` (after the same
  quantisation and shave): 11x11 Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
  ``L = 255``, 'valid' filtering, population (not sample) variances; the mean of the SSIM map.

An image with any NaN or Inf (SR or HR) scores NaN: never a number, and never the ``inf`` of a
perfect match.

Inputs are torch tensors ``CHW`` or ``NCHW`` (or numpy ``HxWxC`` arrays) in ``[0, 1]``. One-channel
images are used as they are (no conversion). Computation is in float64. Single images give a
Python float, batches a float64 tensor with one value per image.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["rgb_to_y", "quantize", "psnr_y", "ssim_y"]

Array = Union[torch.Tensor, np.ndarray]

_Y_COEFFS = (65.738 / 256.0, 129.057 / 256.0, 25.064 / 256.0)
_Y_OFFSET = 16.0 / 255.0


def _as_tensor(img: Array) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(img))
        if t.dim() == 2:
            t = t[None]
        elif t.dim() == 3:
            t = t.permute(2, 0, 1)  # numpy images are HxWxC
        elif t.dim() == 4:
            t = t.permute(0, 3, 1, 2)
        return t
    return img


def rgb_to_y(img: Array) -> torch.Tensor:
    """Y channel (``[..., 1, H, W]``) of RGB in ``[0, 1]`` (channel dim -3); 1 channel passes through."""
    img = _as_tensor(img)
    if img.shape[-3] == 1:
        return img
    if img.shape[-3] != 3:
        raise ValueError(f"rgb_to_y: expected 1 or 3 channels, got shape {tuple(img.shape)}")
    coeffs = img.new_tensor(_Y_COEFFS).view(3, 1, 1)
    return (img * coeffs).sum(dim=-3, keepdim=True) + _Y_OFFSET


def quantize(img: Array) -> torch.Tensor:
    """Round to 8-bit levels: ``round(clamp(img, 0, 1) * 255) / 255``."""
    img = _as_tensor(img)
    return torch.round(img.clamp(0, 1) * 255.0) / 255.0


def _prepare(sr: Array, hr: Array, shave: int):
    sr, hr = _as_tensor(sr), _as_tensor(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {tuple(sr.shape)} vs hr {tuple(hr.shape)}")
    single = sr.dim() == 3
    if single:
        sr, hr = sr[None], hr[None]
    if sr.dim() != 4:
        raise ValueError(f"expected CHW or NCHW, got shape {tuple(sr.shape)}")
    # Quantising clamps, which would score +Inf as a white pixel: an image with any NaN/Inf is
    # marked here and scored NaN, never a (perfect) number.
    broken = ~(torch.isfinite(sr).flatten(1).all(dim=1) & torch.isfinite(hr).flatten(1).all(dim=1))
    sr = quantize(sr.double())
    hr = quantize(hr.double())  # HR from 8-bit files: only removes float32 representation error
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    if shave > 0:
        y_sr = y_sr[..., shave:-shave, shave:-shave]
        y_hr = y_hr[..., shave:-shave, shave:-shave]
    if y_sr.shape[-1] <= 0 or y_sr.shape[-2] <= 0:
        raise ValueError(f"image too small for shave={shave}")
    return y_sr, y_hr, single, broken


def _out(values: torch.Tensor, single: bool):
    return float(values[0]) if single else values


def psnr_y(sr: Array, hr: Array, shave: int = 0):
    """PSNR (dB) on the Y channel; ``sr`` is quantised to 8 bits, borders of ``shave`` px removed."""
    y_sr, y_hr, single, broken = _prepare(sr, hr, shave)
    mse = (y_sr - y_hr).pow(2).flatten(1).mean(dim=1)
    # `mse > 0` is False for NaN, so NaN is tested first: only a true zero error scores inf
    psnr = torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))
    psnr = torch.where(broken.to(psnr.device) | torch.isnan(mse), torch.full_like(mse, math.nan), psnr)
    return _out(psnr, single)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    w = torch.outer(g, g)
    return w / w.sum()


def ssim_y(sr: Array, hr: Array, shave: int = 0):
    """SSIM on the Y channel in ``[0, 255]`` as MATLAB ``ssim`` (see the module docstring)."""
    y_sr, y_hr, single, broken = _prepare(sr, hr, shave)
    x, y = y_sr * 255.0, y_hr * 255.0
    if min(x.shape[-2:]) < 11:
        raise ValueError("ssim_y: image (after shave) must be at least 11x11")
    win = _gaussian_window().to(x.device).view(1, 1, 11, 11)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mu_x * mu_x
    syy = F.conv2d(y * y, win) - mu_y * mu_y
    sxy = F.conv2d(x * y, win) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    ssim = ssim_map.flatten(1).mean(dim=1)
    return _out(torch.where(broken.to(ssim.device), torch.full_like(ssim, math.nan), ssim), single)
