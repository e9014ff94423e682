"""CPU reference for the ``LCoAClusterSort`` operator.

The model groups spatial positions by an int32 cluster id and needs, per batch
row, the stable sorting permutation and its inverse:

* ``perm[b, slot] = position``  (sorted slot -> original position)
* ``inv[b, position] = slot``   (original position -> sorted slot)

Semantics shared by every implementation (this reference, the ONNX Runtime
custom op and the CUDA/TensorRT plugin):

* the sort is **stable**: equal ids keep their original position order, exactly
  like ``np.argsort(kind="stable")`` / ``torch.sort(stable=True)``;
* ids outside ``[0, num_clusters)`` are **clamped** to ``[0, num_clusters - 1]``
  before sorting (negative ids behave like 0, ids >= K like K - 1), so no
  implementation ever indexes out of bounds;
* input is ``[B, N]`` (a 1-D ``[N]`` input is treated as ``B = 1`` and the
  outputs keep the input's shape); outputs are int32.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_CLUSTERS", "cluster_sort_reference"]

#: Largest ``num_clusters`` the CUDA kernel supports (one block scans the K bins).
MAX_CLUSTERS = 1024


def cluster_sort_reference(ids: np.ndarray, num_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort of ``ids`` along the last axis; returns int32 ``(perm, inv)``."""
    k = int(num_clusters)
    if k < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    ids = np.asarray(ids)
    if ids.ndim not in (1, 2):
        raise ValueError(f"ids must have shape [B, N] or [N], got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be an integer array, got {ids.dtype}")
    keys = np.clip(ids.astype(np.int64), 0, k - 1)
    perm = np.argsort(keys, axis=-1, kind="stable").astype(np.int32)
    inv = np.empty_like(perm)
    slots = np.arange(perm.shape[-1], dtype=np.int32)
    np.put_along_axis(inv, perm.astype(np.int64), np.broadcast_to(slots, perm.shape), axis=-1)
    return perm, inv
