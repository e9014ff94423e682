"""Learnable Sparse Pattern (paper Sec. III-B, Eq. 6-10), in the paper's order.

Eq. 6   each position goes to its nearest centroid (cosine)        ``nearest_centroid``
Eq. 7   positions are sorted by cluster, stably                    ``sort.py`` (replaceable)
Eq. 8   the sorted sequence is cut into windows; each window sees   ``adjacent_windows``
        itself and its two neighbours
Eq. 9   softmax weights over those 3w keys                          ``sparse_pattern``
Eq. 10  the centroids follow an exponential moving average         ``ClusterCentroids``
``LearnableSparseAttention`` is the producer module that runs them in the first group.

Centroids live in a buffer. They are initialised from the first training batch (random
feature rows refined by a few Lloyd iterations, as the public model does) and then follow
the paper's exponential moving average (Eq. 10). The public code computes that EMA but
never writes it back; ``decay=0`` reproduces it by keeping the centroids frozen. Eval mode
never changes state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from . import native
from . import sort as sort_lib
from .coa import (CollaborativeAttention, Pattern, Workspace, _add_gathered, _add_scaled, _exporting, _grid, _image,
                  _rows)

KMEANS_INIT_ITERS = 10
# Eq. 9's similarity. "raw": the embedding q against unit keys, as the paper and its public code;
# the softmax is then only as sharp as |q| is large, and trained `realtime` weights keep |q| so
# small that a query spreads its weight almost evenly over its 3w keys
# (benchmarks.attention_diagnostics). "cosine": unit q and unit keys, times a learned temperature
# exp(t) (init 10, at most 100), the cosine attention of Swin Transformer V2.
SCORES = ("raw", "cosine")
COSINE_INIT_TEMPERATURE = 10.0
COSINE_MAX_TEMPERATURE = 100.0
KEY_NORM_EPS = 5e-5  # the public model's eps for L2-normalised keys
# On CPU, windows are processed in blocks of about this many bytes of attention weights. The
# per-window work is small, memory-bound GEMMs; whole-image temporaries (scores, three
# key copies) would cost more in page faults and cache misses than in arithmetic. A GPU has
# neither problem and pays a launch per kernel per block, so it takes every window at once.
BLOCK_BYTES = 1 << 20
# With several CPU threads each op of a block pays a fork and join; below about this many
# windows per thread that costs more than the cache saves (edge at 270x480, 2 threads: 40
# windows of 8 MB run the attention 20 % faster than 5 of 1 MB; one thread prefers 1 MB).
MIN_WINDOWS_PER_THREAD = 20


def _ddp_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

# ----------------------------------------------------------------------------- Eq. 6: assignment
def nearest_centroid(features: Tensor, centroids: Tensor) -> Tensor:
    """Cosine assignment (Eq. 6): argmax_k <x / |x|, mu_k>. features [..., D] -> ids [...].

    Dividing a row by its positive norm does not change which centroid wins, so the
    normalisation is skipped: a full pass over every position saved, in PyTorch and in
    the exported graph. (A zero row scores 0 against every centroid either way.)
    """
    scores = features @ centroids.t()
    if _exporting():
        return scores.argmax(dim=-1)  # one ArgMax node
    # same first-maximum rule; on CPU 20 % faster than argmax over a short last dim
    return scores.max(dim=-1).indices

# ----------------------------------------------------------------------------- Eq. 8: windows
def gather_rows(rows: Tensor, index: Tensor, out: Tensor | None = None) -> Tensor:
    """rows [B, L, C], index [B, M] -> rows[b, index[b, m]] as [B, M, C] (into ``out`` if given).

    One ``index_select`` on the flattened rows: on CPU it is several times faster than
    ``gather`` with an index expanded over C, and it exports as a single ONNX Gather.
    """
    batch, length, channels = rows.shape
    offsets = torch.arange(batch, device=index.device).unsqueeze(1) * length  # [B, 1]
    # rows of an NCHW map are strided by H*W: one transpose copy first, then each row
    # gathered is one cache line instead of C (3x faster on CPU)
    flat = rows.contiguous().reshape(batch * length, channels)
    if out is not None:
        return torch.index_select(flat, 0, (index + offsets).reshape(-1), out=out.view(-1, channels)).view(out.shape)
    return flat.index_select(0, (index + offsets).reshape(-1)).view(batch, index.shape[1], channels)


def padded_slot_index(length: int, window: int, device: torch.device) -> Tensor:
    """Slot j of the padded sorted sequence reads sorted slot src[j].

    The sequence is padded to a whole number of windows by repeating its LAST rows, as
    the public model does (``x[-p:]`` appended). When the padding is longer than the
    sequence itself (inputs smaller than one window), the sequence is repeated
    cyclically, aligned so that the padded tail still ends with the last row; for
    p <= L this is exactly the public model's rule.
    """
    n_windows = (length + window - 1) // window
    padded = n_windows * window
    j = torch.arange(padded, device=device)
    tail = (length - 1) - torch.remainder((padded - 1) - j, length)
    return torch.where(j < length, j, tail)


def with_wrap_windows(slots: Tensor, window: int) -> Tensor:
    """[Lp] padded slots -> [Lp + 2w]: the last window before, the first window after.

    Window i of the padded sequence then finds its previous, own and next window at
    windows i, i+1, i+2 of this sequence: the wrap-around of Eq. 8 without any roll.
    """
    return torch.cat([slots[-window:], slots, slots[:window]])


def adjacent_windows(wrapped: Tensor, window: int) -> Tensor:
    """[B, (W+2)*w, C] wrapped rows -> [B, W, 3w, C], keys in the order [previous, current, next].

    A strided view, no copy: the three windows are contiguous in memory. (The ONNX exporter
    has no strided views; exported graphs use ``neighbour_index`` instead.)
    """
    batch, rows, channels = wrapped.shape
    n_windows = rows // window - 2
    wrapped = wrapped.contiguous()
    return wrapped.as_strided((batch, n_windows, 3 * window, channels),
                              (rows * channels, window * channels, channels, 1))


def neighbour_index(wrapped_index: Tensor, window: int) -> Tensor:
    """[B, (W+2)*w] wrapped positions -> [B, W*3w]: the positions window i reads as keys.

    For exported graphs: one Gather by this index puts the values straight into the
    [W, 3w] key layout (on ORT CPU 2.5x faster than Slices and a Concat of three copies).
    """
    n_windows = wrapped_index.shape[1] // window - 2
    starts = torch.arange(n_windows, device=wrapped_index.device).unsqueeze(1) * window  # [W, 1]
    return wrapped_index.index_select(1, (starts + torch.arange(3 * window, device=wrapped_index.device)).reshape(-1))


# ----------------------------------------------------------------------------- Eq. 9: weights
def unit_keys(rows: Tensor) -> Tensor:
    """Keys: rows L2-normalised, ``F.normalize``'s arithmetic (eps ``KEY_NORM_EPS``).

    The divide broadcasts the norm instead of expanding it first, as ``F.normalize`` does:
    exported, that expand is a full-size copy (5 ms for ``edge`` at 270x480 in ONNX Runtime).
    """
    return rows / torch.linalg.vector_norm(rows, dim=-1, keepdim=True).clamp_min(KEY_NORM_EPS)


def _blockwise(fn, blocks: list[tuple[int, int]], shape: tuple[int, ...], like: Tensor, grad: bool,
               writes_out: bool = False, out: Tensor | None = None) -> Tensor:
    """fn(a, b) for every block of windows, joined along dim 1 into a tensor of ``shape``.

    With autograd (or a single block) the blocks are concatenated. Without, they are written
    straight into one preallocated tensor (``out`` if given), so no whole-image temporary is
    ever made; ``writes_out`` fns take that slice as ``out=`` and fill it themselves.
    """
    if (grad and torch.is_grad_enabled()) or (len(blocks) == 1 and out is None):
        return torch.cat([fn(a, b) for a, b in blocks], dim=1)
    out = like.new_empty(shape) if out is None else out
    for a, b in blocks:
        if writes_out and out.shape[0] == 1:  # a batch of one: the slice is contiguous
            fn(a, b, out=out[:, a:b])
        else:
            out[:, a:b] = fn(a, b)
    return out


def _pull_into_cache(block: Tensor) -> None:
    """Read a CPU block of weights once, front to back, so that the GEMM after it finds it in cache.

    The weights are the one large operand of the window GEMMs (200 MB for ``edge`` at 270x480,
    read again by every group). Fed from memory, MKL's kernels stall on them: 95 ms per group
    there, against 70 ms with the block in cache. One sequential reduction streams the block in
    at full bandwidth for less than it saves (84 ms in all).
    """
    block.amax()


def _window_blocks(n_windows: int, window: int, device: torch.device) -> list[tuple[int, int]]:
    """[start, stop) window ranges: blocks of BLOCK_BYTES on CPU, one block elsewhere."""
    if device.type != "cpu":
        return [(0, n_windows)]
    size = max(1, BLOCK_BYTES // (12 * window * window))  # w x 3w float32 weights per window
    if torch.get_num_threads() > 1:
        size = max(size, MIN_WINDOWS_PER_THREAD * torch.get_num_threads())
    return [(start, min(start + size, n_windows)) for start in range(0, n_windows, size)]


@dataclass
class SparsePattern:
    """LSP pattern for a batch: which rows each window reads, and with what weights."""

    wrapped_index: Tensor  # [B, (W+2)*w] positions in sorted order, padded, one wrap window each side
    inverse: Tensor        # [B, L] position -> sorted slot (always < L: padding is never read back)
    weights: Tensor        # [B, W, w, 3w] attention weights over keys [previous, current, next]
    window: int
    grid: tuple | None = None  # (B, H, W) of the feature map, for exported consumers
    workspace: Workspace | None = None  # reused buffers for apply (inference on CPU only)
    # (values, their mixed rows): the producer's own product, made while its weights were in cache
    premixed: tuple[Tensor, Tensor] | None = None
    _keys_index: Tensor | None = None

    def apply(self, values: Tensor) -> Tensor:
        """values [B, L, C] -> attended values [B, L, C] (Eq. 12: A_s W(X))."""
        if _exporting():
            w, batch, channels, n_windows = self.window, values.shape[0], values.shape[-1], self.weights.shape[1]
            keys = gather_rows(values, neighbour_index(self.wrapped_index, w))       # [B, W*3w, C]
            mixed = self.weights @ keys.reshape(batch, n_windows, 3 * w, channels)
            return gather_rows(mixed.reshape(batch, -1, channels), self.inverse)
        ws = self._workspace(values)
        return gather_rows(self.mixed(values), self.inverse, ws and ws.take("attended", tuple(values.shape), values))

    def add_applied(self, values: Tensor, x: Tensor, alpha: float) -> Tensor:
        """x + alpha * apply(values), laid out as the map x [B, C, H, W]."""
        if (self._workspace(values) is None or x.dtype != values.dtype
                or not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
            return _add_scaled(x, _image(self.apply(values), x), alpha)
        return _add_gathered(x, self.mixed(values), self.inverse, alpha)

    def mixed(self, values: Tensor) -> Tensor:
        """values [B, L, C] -> A_s applied in sorted order, [B, W*w, C] (Eq. 12 before the inverse sort)."""
        if self.premixed is not None and self.premixed[0] is values:
            mixed, self.premixed = self.premixed[1], None
            return mixed
        ws = self._workspace(values)
        batch, n_windows, w, channels = values.shape[0], self.weights.shape[1], self.window, values.shape[-1]
        if self.runs_native(values):
            shape = (batch, n_windows, w, channels)
            out = ws.take("mixed", shape, values) if ws is not None else values.new_empty(shape)
            native.window_apply(self.weights, values.reshape(-1, channels), self.keys_index(), out)
            return out.reshape(batch, -1, channels)
        wrapped = self.wrapped(values)

        def block(a: int, b: int, out: Tensor | None = None) -> Tensor:
            weights = self.weights[:, a:b]
            if weights.device.type == "cpu" and not torch.is_grad_enabled():
                _pull_into_cache(weights)
            return self.mix_block(weights, wrapped, a, b, out)

        shape = (batch, n_windows, w, channels)
        mixed = _blockwise(block, _window_blocks(n_windows, w, values.device), shape, values,  # [B, W, w, C]
                           grad=values.requires_grad or self.weights.requires_grad, writes_out=True,
                           out=ws and ws.take("mixed", shape, values))
        return mixed.reshape(batch, -1, channels)

    def wrapped(self, values: Tensor) -> Tensor:
        """values [B, L, C] -> [B, (W+2)*w, C] in sorted order, padded, one wrap window each side."""
        ws = self._workspace(values)
        return gather_rows(values, self.wrapped_index, ws and ws.take(
            "wrapped", (values.shape[0], self.wrapped_index.shape[1], values.shape[-1]), values))

    def mix_block(self, weights: Tensor, wrapped: Tensor, a: int, b: int, out: Tensor | None = None) -> Tensor:
        """Windows a..b-1: their weights [B, b-a, w, 3w] times their keys' values -> [B, b-a, w, C]."""
        w = self.window
        return torch.matmul(weights, adjacent_windows(wrapped[:, a * w:(b + 2) * w], w), out=out)

    def runs_native(self, values: Tensor) -> bool:
        """Whether ``mixed`` runs the native kernel (CPU float32 inference, contiguous operands)."""
        return (not _exporting() and values.is_contiguous() and self.weights.is_contiguous()
                and native.usable(self.weights, values))

    def keys_index(self) -> Tensor:
        """[B * W * 3w] rows of the flattened values [B * L, C] that the windows read, in order."""
        if self._keys_index is None:
            batch, length = self.inverse.shape
            index = neighbour_index(self.wrapped_index, self.window)                  # [B, W * 3w]
            offsets = torch.arange(batch, device=index.device).unsqueeze(1) * length
            self._keys_index = (index.long() + offsets).reshape(-1)  # the kernel reads int64 row ids
        return self._keys_index

    def _workspace(self, values: Tensor) -> Workspace | None:
        return self.workspace if self.workspace is not None and Workspace.usable(values) else None


def sparse_pattern(queries: Tensor, perm: Tensor, inverse: Tensor, window: int,
                   grid: tuple | None = None, workspace: Workspace | None = None,
                   values: Tensor | None = None) -> SparsePattern:
    """Windowed attention weights over the cluster-sorted sequence (Eq. 8-9).

    Queries are the raw embeddings; keys are the same embeddings L2-normalised. Each window
    attends to itself and its two neighbours (with wrap-around); softmax is order-free, so
    keeping the keys in memory order [previous, current, next] changes nothing but speed.

    Given the producer's own ``values`` (CPU inference), each block of weights is also applied
    to them while it is still in cache, instead of being read back from memory later.
    """
    slots = with_wrap_windows(padded_slot_index(queries.shape[1], window, queries.device), window)
    wrapped_index = perm.index_select(1, slots)                                  # [B, (W+2)*w]
    wrapped = gather_rows(queries, wrapped_index)                                # [B, (W+2)*w, D]
    q = wrapped[:, window:-window].reshape(queries.shape[0], -1, window, queries.shape[-1])
    if _exporting():
        keys = gather_rows(unit_keys(queries), neighbour_index(wrapped_index, window))
        scores = q @ keys.reshape(q.shape[0], q.shape[1], 3 * window, q.shape[-1]).transpose(-1, -2)
        return SparsePattern(wrapped_index, inverse, torch.softmax(scores, dim=-1), window, grid)
    keys = unit_keys(wrapped)
    ws = workspace if workspace is not None and Workspace.usable(queries) else None
    pattern = SparsePattern(wrapped_index, inverse, None, window, grid, ws)
    batch, n_windows = q.shape[:2]
    # a batch's blocks of windows are not contiguous slices, and _blockwise fills those only
    fuse = (ws is not None and values is not None and batch == 1 and Workspace.usable(values)
            and values.dtype == queries.dtype)
    if fuse:
        fast = values.is_contiguous() and native.usable(queries, values)
        if fast:
            rows, index = values.reshape(-1, values.shape[-1]), pattern.keys_index()
        else:
            wrapped_values = pattern.wrapped(values)
        mixed = ws.take("mixed", (batch, n_windows, window, values.shape[-1]), values)

    def block(a: int, b: int, out: Tensor | None = None) -> Tensor:
        keys_t = adjacent_windows(keys[:, a * window:(b + 2) * window], window).transpose(-1, -2)
        scores = q[:, a:b] @ keys_t  # one block: the scores stay in cache
        if out is None:
            return torch.softmax(scores, dim=-1)
        torch.ops.aten._softmax.out(scores, -1, False, out=out)  # no copy of the weights
        if fuse and fast:
            native.window_apply(out, rows, index[a * 3 * window:b * 3 * window], mixed[:, a:b])
        elif fuse:
            pattern.mix_block(out, wrapped_values, a, b, out=mixed[:, a:b])
        return out

    shape = (batch, n_windows, window, 3 * window)
    pattern.weights = _blockwise(block, _window_blocks(n_windows, window, q.device), shape, queries,  # [B, W, w, 3w]
                                 grad=queries.requires_grad, writes_out=True, out=ws and ws.take("weights", shape, queries))
    if fuse:
        pattern.premixed = (values, mixed.reshape(batch, -1, values.shape[-1]))
    return pattern


# ----------------------------------------------------------------------------- Eq. 10: centroids
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

# ----------------------------------------------------------------------------- the producer
class LearnableSparseAttention(CollaborativeAttention):
    """Producer (LSP): cluster, sort, window, and attend to adjacent windows (Eq. 6-9)."""

    def __init__(self, channels: int, match_dim: int, num_clusters: int, window_size: int,
                 res_scale: float, centroid_decay: float, score: str = "raw"):
        super().__init__(channels, res_scale)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.match_conv = nn.Conv2d(channels, match_dim, 3, padding=1)
        if score == "cosine":  # log temperature; absent from "raw" state dicts
            self.log_temperature = nn.Parameter(torch.tensor(math.log(COSINE_INIT_TEMPERATURE)))
        self.kmeans = ClusterCentroids(num_clusters, match_dim, centroid_decay)
        self.window_size = window_size
        self.sort_fn: sort_lib.ClusterSort = sort_lib.stable_sort
        self.workspace = Workspace()

    def compute_pattern(self, x: Tensor, values: Tensor | None = None) -> SparsePattern:
        match = self.match_conv(x)
        queries = _rows(match)
        ids = self.kmeans(queries)  # detached: the sort is not differentiable, the weights are
        if hasattr(self, "log_temperature"):
            # the keys are the queries normalised again (sparse_pattern): unchanged by this scale,
            # and so is Eq. 6's cosine assignment above
            queries = unit_keys(queries) * self.log_temperature.clamp(max=math.log(COSINE_MAX_TEMPERATURE)).exp()
        perm, inverse = self.sort_fn(ids, self.kmeans.num_clusters)
        return sparse_pattern(queries, perm, inverse, self.window_size, _grid(match), self.workspace, values)

    def forward(self, x: Tensor, pattern: Pattern) -> tuple[Tensor, Pattern]:
        if _exporting() or not Workspace.usable(x):
            return super().forward(x, self.compute_pattern(x))
        values = self._values(x, self.workspace)  # first, so that the pattern applies itself to them
        pattern = self.compute_pattern(x, values)
        return self._attend(x, pattern, values), pattern
