"""Learnable Sparse Pattern (paper Sec. III-B, Eq. 6-10): k-means centroids and assignment.

Centroids live in a buffer. They are initialised from the first training batch (random
feature rows refined by a few Lloyd iterations, as the public model does) and then follow
the paper's exponential moving average (Eq. 10). The public code computes that EMA but
never writes it back; ``decay=0`` reproduces it by keeping the centroids frozen. Eval mode
never changes state.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

KMEANS_INIT_ITERS = 10


def _ddp_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def nearest_centroid(features: Tensor, centroids: Tensor) -> Tensor:
    """Cosine assignment (Eq. 6): argmax_k <x / |x|, mu_k>. features [..., D] -> ids [...].

    Dividing a row by its positive norm does not change which centroid wins, so the
    normalisation is skipped: a full pass over every position saved, in PyTorch and in
    the exported graph. (A zero row scores 0 against every centroid either way.)
    """
    return (features @ centroids.t()).argmax(dim=-1)


def member_directions(features: Tensor, ids: Tensor, num_clusters: int,
                      all_ranks: bool = False) -> tuple[Tensor, Tensor]:
    """Sum of member features per cluster and member counts: ([K, D], [K])."""
    flat, flat_ids = features.reshape(-1, features.shape[-1]), ids.reshape(-1)
    sums = features.new_zeros(num_clusters, features.shape[-1]).index_add_(0, flat_ids, flat)
    counts = torch.bincount(flat_ids, minlength=num_clusters).to(features.dtype)
    if all_ranks and _ddp_active():  # every replica updates from the global batch
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return sums, counts


def lloyd_step(features: Tensor, centroids: Tensor, ids: Tensor | None = None,
               all_ranks: bool = False) -> Tensor:
    """One k-means step on the sphere: new mean = normalised member sum; empty clusters keep theirs."""
    if ids is None:
        ids = (features @ centroids.t()).argmax(dim=-1)
    sums, counts = member_directions(features, ids, centroids.shape[0], all_ranks)
    return torch.where((counts > 0).unsqueeze(-1), F.normalize(sums, dim=-1), centroids)


class ClusterCentroids(nn.Module):
    """K centroids of dimension D, with the state the paper's EMA update needs."""

    def __init__(self, num_clusters: int, dim: int, decay: float = 0.999):
        super().__init__()
        self.num_clusters = num_clusters
        self.decay = decay
        self.register_buffer("centroids", F.normalize(torch.randn(num_clusters, dim), dim=-1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, features: Tensor) -> None:
        """Random rows of the batch, then Lloyd steps on the raw features (as the public model)."""
        rows = features.reshape(-1, features.shape[-1])
        if _ddp_active():  # the global batch, in rank order, as a single process would see it
            gathered = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, rows.contiguous())
            rows = torch.cat(gathered)
        n, k = rows.shape[0], self.num_clusters
        pick = torch.randperm(n, device=rows.device)[:k] if n >= k else torch.randint(0, n, (k,), device=rows.device)
        centroids = rows[pick]
        for _ in range(KMEANS_INIT_ITERS):
            centroids = lloyd_step(rows, centroids)
        if _ddp_active():  # replicas agree even if their random streams drifted apart
            dist.broadcast(centroids, src=0)
        self.centroids.copy_(centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, features: Tensor, ids: Tensor) -> None:
        """Eq. 10: mu_k <- decay * mu_k + (1 - decay) * normalised mean of cluster k's members.

        Clusters without members in this batch keep their centroid.
        """
        target = lloyd_step(F.normalize(features, dim=-1), self.centroids, ids, all_ranks=True)
        self.centroids.mul_(self.decay).add_(target, alpha=1.0 - self.decay)

    def forward(self, features: Tensor) -> Tensor:
        """features [B, L, D] -> cluster ids [B, L] (int64, no gradient)."""
        if self.training and not bool(self.initialized):
            self.initialize(features.detach())
        ids = nearest_centroid(features.detach(), self.centroids)
        if self.training and self.decay > 0:
            self.ema_update(features.detach(), ids)
        return ids
