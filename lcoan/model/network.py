"""LCoAN: head, residual groups with collaborative attention, upsampler (paper Fig. 2)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from .attention import ATTENTION_MODES, Pattern, build_attention
from .lsp import SCORES
from .reparam import collapse, conv3x3, parse_branches
from .sort import ClusterSort

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass
class LCoANConfig:
    scale: int = 2
    n_feats: int = 128
    n_groups: int = 10
    n_blocks: int = 4
    n_clusters: int = 128
    window_size: int = 384
    match_dim: int = 128          # channels of the matching embedding (C / reduction)
    res_scale: float = 0.1        # beta of Eq. 12, also the residual-group scale
    attention: str = "lcoa"
    centroid_decay: float = 0.999 # Eq. 10; 0 keeps the centroids frozen, as the public code does
    rgb_mean: tuple[float, float, float] = field(default=DIV2K_RGB_MEAN)
    # training-time branches of every 3x3 conv ("1x1,identity,sobel,laplacian,expand";
    # model/reparam.py); "" is the plain conv, which is what every loaded model runs
    reparam: str = ""
    # LSP's similarity (Eq. 9): "raw" queries against unit keys, as the paper and its public code;
    # "cosine": unit queries and keys times a learned temperature (lsp.SCORES)
    score: str = "raw"

    def __post_init__(self):
        self.rgb_mean = tuple(self.rgb_mean)
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        for name in ("n_feats", "n_groups", "n_clusters", "window_size", "match_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.reparam = ",".join(parse_branches(self.reparam))
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    """conv-ReLU-conv plus identity, unscaled (the public model's RCAB without channel attention)."""

    def __init__(self, channels: int, branches: tuple[str, ...] = ()):
        super().__init__()
        self.conv1 = conv3x3(channels, channels, branches)
        self.conv2 = conv3x3(channels, channels, branches)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class ResidualGroup(nn.Module):
    def __init__(self, cfg: LCoANConfig, index: int):
        super().__init__()
        branches = parse_branches(cfg.reparam)
        self.blocks = nn.Sequential(*[ResBlock(cfg.n_feats, branches) for _ in range(cfg.n_blocks)])
        self.attention = build_attention(cfg.attention, index, cfg.n_feats, cfg.match_dim,
                                         cfg.n_clusters, cfg.window_size, cfg.res_scale,
                                         cfg.centroid_decay, cfg.score)
        self.conv = conv3x3(cfg.n_feats, cfg.n_feats, branches)
        self.res_scale = cfg.res_scale

    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        res, pattern = self.attention(self.blocks(x), pattern)
        return x + self.res_scale * self.conv(res), pattern


def upsampler(scale: int, channels: int, branches: tuple[str, ...] = ()) -> nn.Sequential:
    """[conv C->4C, PixelShuffle(2)] x log2(s), or [conv C->9C, PixelShuffle(3)]."""
    layers: list[nn.Module] = []
    if scale == 3:
        layers += [conv3x3(channels, 9 * channels, branches), nn.PixelShuffle(3)]
    else:
        for _ in range(int(math.log2(scale))):
            layers += [conv3x3(channels, 4 * channels, branches), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class LCoAN(nn.Module):
    """Input NCHW RGB in [0, 1]; output the SR image, not clamped."""

    def __init__(self, cfg: LCoANConfig):
        super().__init__()
        self.config = cfg
        self.register_buffer("rgb_mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)
        branches = parse_branches(cfg.reparam)
        self.head = conv3x3(3, cfg.n_feats, branches)
        self.groups = nn.ModuleList(ResidualGroup(cfg, i) for i in range(cfg.n_groups))
        self.body_conv = conv3x3(cfg.n_feats, cfg.n_feats, branches)
        self.upsampler = upsampler(cfg.scale, cfg.n_feats, branches)
        self.tail_conv = conv3x3(cfg.n_feats, 3, branches)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, lr: Tensor) -> Tensor:
        shallow = self.head(lr - self.rgb_mean)
        x, pattern = shallow, None
        for group in self.groups:
            x, pattern = group(x, pattern)
        x = self.body_conv(x) + shallow
        return self.tail_conv(self.upsampler(x)) + self.rgb_mean

    def set_sort(self, sort_fn: ClusterSort) -> None:
        """Swap the cluster sort of every LSP module (export uses this)."""
        for module in self.modules():
            if hasattr(module, "sort_fn"):
                module.sort_fn = sort_fn

    def collapse_reparam(self) -> "LCoAN":
        """Fold every reparameterised conv into its single 3x3 conv (in place); the config then
        says ``reparam=""``, and the state dict has the plain preset's keys and shapes."""
        collapse(self)
        self.config = dataclasses.replace(self.config, reparam="")
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
