"""Reference x2/x3/x4 super-resolution nets that people run for real-time video, written here
from their papers so that the presets can be timed side by side with them.

ESPCN    Shi et al., CVPR 2016: conv5x5-64, conv3x3-32, conv3x3 to 3*s^2, pixel shuffle (tanh).
FSRCNN   Dong et al., ECCV 2016: d=56, s=12, m=4; a 9x9 transposed conv does the upscaling.
compact  the SRVGGNetCompact layout of Real-ESRGAN (Wang et al., 2021): num_conv 3x3 convs of
         num_feat channels with PReLU, a last conv to 3*s^2, pixel shuffle, plus the
         nearest-upsampled input. ``compact-64x16`` is realesr-general-x4v3's layout.

All take and return RGB in [0, 1] like LCoAN, so FLOPs and timings compare like for like.
Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ESPCN(nn.Module):
    def __init__(self, scale: int = 2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 5, padding=2), nn.Tanh(),
            nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
            nn.Conv2d(32, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class FSRCNN(nn.Module):
    def __init__(self, scale: int = 2, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d),
                                   nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        # kernel 9, stride s: output exactly s x the input with this padding pair
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.deconv(self.body(x))


class CompactSR(nn.Module):
    """SRVGGNetCompact's layout (Real-ESRGAN ``srvgg_arch.py``), written from its description."""

    def __init__(self, scale: int = 2, num_feat: int = 64, num_conv: int = 16):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        layers += [nn.Conv2d(num_feat, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


PEERS = {
    "espcn": lambda scale: ESPCN(scale),
    "fsrcnn": lambda scale: FSRCNN(scale),
    "compact-32x16": lambda scale: CompactSR(scale, 32, 16),
    "compact-64x16": lambda scale: CompactSR(scale, 64, 16),
}


def build_peer(name: str, scale: int = 2) -> nn.Module:
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {sorted(PEERS)}")
    torch.manual_seed(0)
    return PEERS[name](scale).eval()
