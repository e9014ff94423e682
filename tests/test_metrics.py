"""Project metrics vs independent references (skimage) on real Set5 images."""
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lcoan.data.paths import default_data_root
from lcoan.metrics import psnr_y, quantize, rgb_to_y, ssim_y

SET5 = default_data_root() / "benchmark" / "Set5" / "HR"
needs_data = pytest.mark.skipif(not SET5.is_dir(), reason=f"benchmark data not found at {SET5}")


def y255_reference(rgb8: np.ndarray) -> np.ndarray:
    """Y in [0, 255] from uint8 RGB, written independently of lcoan.metrics."""
    r, g, b = (rgb8[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.738 * r + 129.057 * g + 25.064 * b) / 256.0


def perturbed(hr8: np.ndarray, seed: int) -> np.ndarray:
    """A float SR image in [0, 1] with noise, blur-like shift and out-of-range values."""
    rng = np.random.default_rng(seed)
    hr = hr8.astype(np.float64) / 255.0
    sr = 0.7 * hr + 0.3 * np.roll(hr, 1, axis=1) + rng.normal(0, 0.02, hr.shape)
    sr[:8, :8] = 1.3  # clamped by the quantisation
    sr[-8:, -8:] = -0.2
    return sr


def to_chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


@needs_data
@pytest.mark.parametrize("name,shave", [("butterfly", 4), ("bird", 2), ("woman", 3)])
def test_psnr_ssim_vs_skimage(name, shave):
    hr8 = np.asarray(Image.open(SET5 / f"{name}.png").convert("RGB"))
    sr = perturbed(hr8, seed=len(name))
    sr8 = np.round(np.clip(sr, 0.0, 1.0) * 255.0).astype(np.uint8)
    sl = np.s_[shave:-shave, shave:-shave]
    y_hr, y_sr = y255_reference(hr8)[sl], y255_reference(sr8)[sl]
    ref_psnr = peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    ref_ssim = structural_similarity(y_hr, y_sr, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
    hr_t, sr_t = to_chw(hr8.astype(np.float32) / 255.0), to_chw(sr.astype(np.float32))
    p, s = psnr_y(sr_t, hr_t, shave), ssim_y(sr_t, hr_t, shave)
    assert isinstance(p, float) and isinstance(s, float)
    assert abs(p - ref_psnr) < 1e-3, (p, ref_psnr)
    assert abs(s - ref_ssim) < 1e-4, (s, ref_ssim)
    # batched tensors give per-image values; numpy HxWxC input gives the same numbers
    pb = psnr_y(torch.stack([sr_t, hr_t]), torch.stack([hr_t, hr_t]), shave)
    assert pb.shape == (2,) and abs(float(pb[0]) - p) < 1e-9 and torch.isinf(pb[1])
    assert abs(ssim_y(sr.astype(np.float32), hr8.astype(np.float32) / 255.0, shave) - s) < 1e-9


def test_rgb_to_y_values():
    img = torch.zeros(3, 2, 2, dtype=torch.float64)
    img[:, 0, 0] = 1.0
    img[0, 1, 1] = 1.0
    y = rgb_to_y(img)
    assert y.shape == (1, 2, 2)
    assert abs(float(y[0, 0, 0]) - (16 / 255 + (65.738 + 129.057 + 25.064) / 256)) < 1e-12
    assert abs(float(y[0, 0, 1]) - 16 / 255) < 1e-12
    assert abs(float(y[0, 1, 1]) - (16 / 255 + 65.738 / 256)) < 1e-12
    grey = torch.rand(1, 4, 4)
    assert torch.equal(rgb_to_y(grey), grey)


def test_quantize():
    x = torch.tensor([-0.1, 0.0, 0.3, 0.5 / 255 + 1e-6, 1.0, 1.2])
    q = quantize(x)
    assert torch.allclose(q * 255, torch.round(q * 255))
    assert q.min() == 0 and q.max() == 1
    assert abs(float(q[2]) - round(0.3 * 255) / 255) < 1e-7
    assert float(q[3]) == pytest.approx(1 / 255)


def test_identical_images_and_errors():
    img = torch.rand(3, 20, 20)
    q = quantize(img)
    assert psnr_y(q, q, 2) == float("inf")
    assert ssim_y(q, q, 2) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        psnr_y(img, img[:, :10], 0)
    with pytest.raises(ValueError):
        ssim_y(img[:, :12, :12], img[:, :12, :12], 1)  # 10x10 after shave < window
