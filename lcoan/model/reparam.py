"""Structural reparameterisation: a 3x3 conv trained as parallel linear branches, one conv at inference.

Every branch is linear in its input, so their sum is one 3x3 convolution (RepVGG, Ding et al. 2021;
ECBSR, Zhang et al. 2021; SESR, Bhardwaj et al. 2022). Training sees a richer optimisation
landscape; deployment sees exactly the conv the preset has: same FLOPs, same ONNX graph, same
TensorRT engine. The branches (``LCoANConfig.reparam``, comma-separated):

``1x1``        a 1x1 conv (RepVGG)
``identity``   x itself, where in == out channels (RepVGG, ECBSR)
``sobel``      1x1 conv -> fixed Sobel-x and Sobel-y depthwise filters with learned per-channel
               scales and biases (ECBSR's edge-oriented branches; two branches)
``laplacian``  the same with the 4-neighbour Laplacian (ECBSR)
``expand``     1x1 conv to 2x the channels, then 3x3 back (ECBSR's expand-squeeze, SESR's
               collapsible linear block)

The plain 3x3 conv is always one of the branches. Branches that go through a 1x1 conv before
a 3x3 filter pad that 1x1 output with its own bias instead of zeros (ECBSR): the collapsed conv
pads its input with zeros, and 1x1(0) is that bias, so both forms agree on the border too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BRANCHES = ("1x1", "identity", "sobel", "laplacian", "expand")
EXPAND = 2  # ECBSR's depth multiplier for the expand-squeeze branch

_SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
_MASKS = {
    "sobel_x": _SOBEL_X,
    "sobel_y": tuple(zip(*_SOBEL_X)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


def parse_branches(spec: str) -> tuple[str, ...]:
    """``"1x1,identity"`` -> ("1x1", "identity"); "" -> (); an unknown name is a ValueError."""
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in BRANCHES]
    if unknown:
        raise ValueError(f"reparam branch {unknown[0]!r} is not one of {', '.join(BRANCHES)}")
    return names


def _pad_with_bias(y: Tensor, bias: Tensor) -> Tensor:
    """Pad by 1 with each channel's bias: what a 1x1 conv gives on the zero padding of its input."""
    b = bias.view(1, -1, 1, 1)
    return F.pad(y - b, (1, 1, 1, 1)) + b


class _EdgeBranch(nn.Module):
    """1x1 conv, then a fixed depthwise 3x3 filter scaled per channel (ECBSR's conv1x1-sobel/laplacian)."""

    def __init__(self, cin: int, cout: int, mask):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.scale = nn.Parameter(torch.randn(cout, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(cout) * 1e-3)
        self.register_buffer("mask", torch.tensor(mask).expand(cout, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = _pad_with_bias(self.conv(x), self.conv.bias)
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=y.shape[1])

    def fused(self) -> tuple[Tensor, Tensor]:
        w0, b0 = self.conv.weight.double()[:, :, 0, 0], self.conv.bias.double()   # (cout, cin), (cout,)
        k = (self.scale.double() * self.mask.double())                          # (cout, 1, 3, 3)
        weight = k * w0[:, :, None, None]                                         # (cout, cin, 3, 3)
        bias = b0 * k.sum(dim=(1, 2, 3)) + self.bias.double()
        return weight, bias


class RepConv3x3(nn.Module):
    """A 3x3 conv (padding 1) that trains as the sum of ``branches``; :meth:`fuse` gives the one conv."""

    def __init__(self, cin: int, cout: int, branches: tuple[str, ...]):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1x1 = nn.Conv2d(cin, cout, 1) if "1x1" in branches else None
        self.identity = "identity" in branches and cin == cout
        edges = [m for b in branches if b in ("sobel", "laplacian")
                 for m in (("sobel_x", "sobel_y") if b == "sobel" else ("laplacian",))]
        self.edges = nn.ModuleDict({m: _EdgeBranch(cin, cout, _MASKS[m]) for m in edges})
        if "expand" in branches:
            self.expand = nn.Conv2d(cin, EXPAND * cin, 1)
            self.squeeze = nn.Conv2d(EXPAND * cin, cout, 3)
        else:
            self.expand = self.squeeze = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3x3(x)
        if self.conv1x1 is not None:
            out = out + self.conv1x1(x)
        if self.identity:
            out = out + x
        for edge in self.edges.values():
            out = out + edge(x)
        if self.expand is not None:
            out = out + self.squeeze(_pad_with_bias(self.expand(x), self.expand.bias))
        return out

    @torch.no_grad()
    def fused_weights(self) -> tuple[Tensor, Tensor]:
        """The single conv's (weight, bias), summed in float64 so that the collapse adds no error."""
        weight, bias = self.conv3x3.weight.double().clone(), self.conv3x3.bias.double().clone()
        if self.conv1x1 is not None:
            weight[:, :, 1, 1] += self.conv1x1.weight.double()[:, :, 0, 0]
            bias += self.conv1x1.bias.double()
        if self.identity:
            weight[:, :, 1, 1] += torch.eye(self.cout, dtype=torch.float64, device=weight.device)
        for edge in self.edges.values():
            w, b = edge.fused()
            weight += w
            bias += b
        if self.expand is not None:
            k1, b1 = self.squeeze.weight.double(), self.squeeze.bias.double()   # (cout, m, 3, 3)
            k0, b0 = self.expand.weight.double(), self.expand.bias.double()     # (m, cin, 1, 1)
            # composing two convs is a conv of the 3x3 kernel by the transposed 1x1 (ECBSR)
            weight += F.conv2d(k1, k0.permute(1, 0, 2, 3))                        # (cout, cin, 3, 3)
            bias += (k1 * b0.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)) + b1
        return weight, bias

    def fuse(self) -> nn.Conv2d:
        weight, bias = self.fused_weights()
        conv = nn.Conv2d(self.cin, self.cout, 3, padding=1).to(self.conv3x3.weight.device)
        conv.weight.data.copy_(weight.to(conv.weight.dtype))
        conv.bias.data.copy_(bias.to(conv.bias.dtype))
        return conv


def conv3x3(cin: int, cout: int, branches: tuple[str, ...] = ()) -> nn.Module:
    """The network's 3x3 conv: plain, or its training form when ``branches`` is not empty."""
    return RepConv3x3(cin, cout, branches) if branches else nn.Conv2d(cin, cout, 3, padding=1)


def collapse(module: nn.Module) -> int:
    """Replace every :class:`RepConv3x3` under ``module`` by its fused conv, in place; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, RepConv3x3):
            setattr(module, name, child.fuse().train(child.training))
            count += 1
        else:
            count += collapse(child)
    return count
