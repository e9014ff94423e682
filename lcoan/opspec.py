"""The ``LCoAClusterSort`` operator: its identity, limits and I/O types, and its numpy reference.

One home for these facts, at the bottom of the stack (numpy only; nothing of ``export``, the
engine or the app): the ONNX rewrite, the ONNX Runtime CPU op, calibration, the engine's plugin
loader and the C++ plugin all read them from here or are checked against it
(``tests/test_opspec.py`` parses ``plugins/cluster_sort/*.h`` and ``*.cuh``).

The model groups spatial positions by an int32 cluster id and needs, per batch row, the stable
sorting permutation and its inverse:

* ``perm[b, slot] = position``  (sorted slot -> original position)
* ``inv[b, position] = slot``   (original position -> sorted slot)

Semantics shared by every implementation (this reference, the ONNX Runtime custom op and the
CUDA/TensorRT plugin):

* the sort is **stable**: equal ids keep their original position order, exactly like
  ``np.argsort(kind="stable")`` / ``torch.sort(stable=True)``;
* ids outside ``[0, num_clusters)`` are **clamped** to ``[0, num_clusters - 1]`` before sorting
  (negative ids behave like 0, ids >= K like K - 1), so no implementation ever indexes out of
  bounds;
* input is ``[B, N]`` (a 1-D ``[N]`` input is treated as ``B = 1`` and the outputs keep the
  input's shape); outputs are int32.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NAME", "DOMAIN", "DOMAIN_OPSET", "VERSION", "NAMESPACE", "FIELD", "MIN_CLUSTERS",
           "MAX_CLUSTERS", "INPUTS", "OUTPUTS", "IO_DTYPE", "WORKSPACE_FIELD", "registry_key",
           "onnx_attributes", "check_num_clusters", "cluster_sort_reference"]

#: op_type of the ONNX node and the TensorRT plugin creator's name.
NAME = "LCoAClusterSort"
#: ONNX domain of the node as written to disk (the form TensorRT's ONNX parser reads).
DOMAIN = "lcoan"
#: Opset version declared for :data:`DOMAIN` in the model's ``opset_import``.
DOMAIN_OPSET = 1
#: Plugin version and namespace: the TensorRT registry key is ``NAMESPACE::NAME/VERSION``.
VERSION = "1"
NAMESPACE = "lcoan"
#: The one ONNX attribute / plugin field (int32): the number of clusters K.
FIELD = "num_clusters"
#: K is bounded by the CUDA kernel: one block of 256 threads scans the K bins, 4 bins each.
MIN_CLUSTERS = 1
MAX_CLUSTERS = 1024
#: Tensor names inside the op (not graph names) and their element type; all int32, linear layout.
INPUTS = ("ids",)
OUTPUTS = ("perm", "inv")
IO_DTYPE = np.int32
#: Serialized into engines by the plugin itself (never an ONNX attribute).
WORKSPACE_FIELD = "workspace_bytes"


def registry_key() -> str:
    """``lcoan::LCoAClusterSort/1``, as TensorRT names a creator."""
    return f"{NAMESPACE}::{NAME}/{VERSION}"


def onnx_attributes(num_clusters: int) -> dict:
    """The node's attributes: TensorRT's ONNX parser reads ``plugin_version``/``plugin_namespace``
    to find the creator, and passes the rest as plugin fields."""
    return {"plugin_version": VERSION, "plugin_namespace": NAMESPACE, FIELD: check_num_clusters(num_clusters)}


def check_num_clusters(num_clusters) -> int:
    """``num_clusters`` as an int in ``[MIN_CLUSTERS, MAX_CLUSTERS]``; ValueError otherwise."""
    k = int(num_clusters)
    if not MIN_CLUSTERS <= k <= MAX_CLUSTERS:
        raise ValueError(f"{FIELD} must be an int in [{MIN_CLUSTERS}, {MAX_CLUSTERS}], got {num_clusters}")
    return k


def cluster_sort_reference(ids: np.ndarray, num_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort of ``ids`` along the last axis; returns int32 ``(perm, inv)``.

    Any ``num_clusters >= 1`` is accepted (the reference has no kernel limit), so it can check
    inputs the plugin refuses.
    """
    k = int(num_clusters)
    if k < MIN_CLUSTERS:
        raise ValueError(f"{FIELD} must be >= {MIN_CLUSTERS}, got {num_clusters}")
    ids = np.asarray(ids)
    if ids.ndim not in (1, 2):
        raise ValueError(f"ids must have shape [B, N] or [N], got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be an integer array, got {ids.dtype}")
    keys = np.clip(ids.astype(np.int64), 0, k - 1)
    perm = np.argsort(keys, axis=-1, kind="stable").astype(IO_DTYPE)
    inv = np.empty_like(perm)
    slots = np.arange(perm.shape[-1], dtype=IO_DTYPE)
    np.put_along_axis(inv, perm.astype(np.int64), np.broadcast_to(slots, perm.shape), axis=-1)
    return perm, inv
