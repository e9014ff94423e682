"""The one replaceable sort of the Learnable Sparse Pattern.

LSP orders positions by cluster id (paper Eq. 7). Everything downstream only needs
``perm`` (sorted slot -> position) and ``inverse`` (position -> sorted slot), so the
sort is a plain function that export swaps: a stable counting sort built from standard
ONNX ops, or a single TensorRT plugin node. All forms are *stable*: positions that share
a cluster keep their raster order, so the pattern does not depend on the device's sort.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

# (cluster ids [B, L] int64, number of clusters) -> (perm [B, L], inverse [B, L]), int64.
ClusterSort = Callable[[Tensor, int], tuple[Tensor, Tensor]]


def inverse_permutation(perm: Tensor) -> Tensor:
    """inverse[b, perm[b, i]] = i, as a scatter so that it exports as ScatterElements."""
    slots = torch.arange(perm.shape[1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter(1, perm, slots)


def stable_sort(cluster_ids: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
    """Default PyTorch form: ``torch.sort(stable=True)``."""
    del num_clusters  # the comparison sort does not need it
    perm = torch.sort(cluster_ids, dim=-1, stable=True).indices
    return perm, inverse_permutation(perm)


def counting_sort(cluster_ids: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
    """Stable counting sort from one-hot, cumulative sums and gathers.

    Uses only ops that map one-to-one onto standard ONNX (Equal, CumSum, GatherElements,
    ScatterElements) and no TopK, whose K is capped at 3840 in TensorRT. The one-hot and its
    running count are int32 (O(L * K) memory, half of int64's); every position then reads
    its own cluster's column instead of reducing over all K. Ids are clamped to [0, K) as
    every other implementation of the sort does.
    """
    ids = cluster_ids.clamp(0, num_clusters - 1)
    clusters = torch.arange(num_clusters, device=ids.device)
    one_hot = (ids.unsqueeze(-1) == clusters).to(torch.int32)            # [B, L, K]
    seen = torch.cumsum(one_hot, dim=1, dtype=torch.int32)               # inclusive, [B, L, K]
    rank_in_cluster = seen.gather(2, ids.unsqueeze(-1)).squeeze(-1) - 1  # [B, L]
    counts = seen[:, -1]                                                 # [B, K]
    cluster_offset = torch.cumsum(counts, dim=1, dtype=torch.int32) - counts
    inverse = (rank_in_cluster + cluster_offset.gather(1, ids)).to(torch.int64)  # [B, L]
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    perm = torch.empty_like(inverse).scatter(1, inverse, positions)
    return perm, inverse
