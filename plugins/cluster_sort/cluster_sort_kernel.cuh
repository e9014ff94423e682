// LCoAClusterSort CUDA kernels: stable counting sort of int32 cluster ids.
//
// For every batch row b of ids[B, N] (row-major, contiguous) computes
//   perm[b, slot]     = position   (sorted slot -> original position)
//   inv[b, position]  = slot       (original position -> sorted slot)
// where the order is a *stable* sort by clamp(id, 0, K - 1): ties keep their
// position order, exactly like np.argsort(kind="stable") (see
// lcoan/opspec.py, the reference all implementations are tested
// against). Ids outside [0, K) are clamped, never used as raw indices.
//
// This header is plain C/C++ (no TensorRT, no CUDA-C extensions) so that the
// TensorRT plugin (.cpp, host compiler) and the ctypes harness can include it.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! Largest supported number of clusters K (the K bins are scanned by one block).
#define LCOAN_CLUSTER_SORT_MAX_CLUSTERS 1024

//! Scratch memory (bytes) lcoanClusterSort needs for ids[B, N] and K clusters.
//! A pure function of (B, N, K): no device query, no allocation. Returns 0 for
//! empty inputs and for invalid arguments (B < 0, N < 0, K outside [1, 1024]).
size_t lcoanClusterSortWorkspaceSize(int B, int N, int K);

//! Enqueue the sort on `stream` (asynchronous; nothing is synchronised).
//! ids, perm and inv are device pointers to B * N int32 values; workspace is a
//! device buffer of at least lcoanClusterSortWorkspaceSize(B, N, K) bytes
//! (256-byte alignment recommended, as TensorRT provides).
//! Returns a cudaError_t as int: cudaSuccess, cudaErrorInvalidValue for bad
//! arguments (K outside [1, 1024], negative sizes, N > INT32_MAX - 2048, null
//! pointers, workspace too small) or the launch error. B == 0 or N == 0 is a no-op.
int lcoanClusterSort(const int32_t* ids, int32_t* perm, int32_t* inv, int B, int N, int K, void* workspace,
    size_t workspaceSize, cudaStream_t stream);

#ifdef __cplusplus
} // extern "C"
#endif
