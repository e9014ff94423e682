// LCoAClusterSort: stable, deterministic counting sort of int32 cluster ids.
//
// Algorithm (per batch row, ids clamped to [0, K-1], K <= 1024)
// ----------------------------------------------------------------
// The row is cut into tiles of kTileSize positions; one 256-thread block owns
// one tile and each of its 8 warps owns a contiguous sub-tile of 256 positions
// that it walks in order, 32 positions (one per lane) per step.
//
//   1. tileHistogramKernel   grid (tiles, B): per-tile histogram
//                            counts[b][k][tile] (shared-memory histogram,
//                            warp-aggregated with __match_any_sync).
//   2. tileScanKernel        grid (K, B): exclusive scan of counts[b][k][:]
//                            over tiles (in place) -> "elements with id k in
//                            earlier tiles"; totals[b][k] = row total of id k.
//   3. scatterKernel         grid (tiles, B): each block
//                            a) recounts its tile per warp  -> cnt[w][k],
//                            b) exclusive-scans totals[b][:] over k (one
//                               cub::BlockScan, K <= 1024 = 256 x 4 items),
//                            c) turns cnt[w][k] into the first output slot of
//                               id k for warp w:
//                               base[k] + counts[b][k][tile] + sum_{w'<w} cnt[w'][k],
//                            d) walks the sub-tile again in position order; in
//                               each 32-lane step the rank of a lane among the
//                               earlier lanes with the same id is
//                               popc(__match_any_sync(...) & lanemask_lt),
//                               and the group's leader advances cnt[w][k].
//
// slot(p) = #{ids < k in the row} + #{id k in earlier tiles}
//         + #{id k in earlier warps of the tile} + #{id k in earlier steps of
//           the warp} + #{id k in lower lanes of the step}
//         = #{q : key(q) < key(p) or (key(q) == key(p) and q < p)},
// which is exactly the stable rank, so the result equals
// np.argsort(clip(ids), kind="stable") bit for bit. No global atomics are used:
// the output is deterministic, run to run.
//
// Why a hand-written counting sort and not cub::DeviceRadixSort::SortPairs on
// (key = b << bits(K) | clamp(id), value = position):
//   * the TensorRT plugin must report its workspace from getWorkspaceSize()
//     as a pure function of the shapes; CUB's temp-storage query dispatches on
//     the current device's PTX version / SM count, so it needs a live device
//     and may differ between build and runtime devices. Ours is closed-form.
//   * CUB needs 4 extra B*N arrays (keys/values double buffers) plus its temp
//     storage and ceil((bits(B) + bits(K)) / 8) onesweep passes plus a
//     separate kernel for the inverse permutation; here the workspace is only
//     B*K*(ceil(N/2048) + 1) int32 and perm and inv are written by the same
//     pass (inv coalesced). DeviceSegmentedRadixSort (one segment per row) is
//     slow for few long segments, the typical shape here (B small, N = H*W).
//   * the number of passes does not depend on K or B, and there are no global
//     atomics, so results are deterministic.
// Not yet measured against CUB on hardware; benchmarks/cluster_sort.py times
// this kernel against torch.sort(stable=True) on a GPU.
//
// Requires sm_70+ (__match_any_sync); every default target (sm_87 .. sm_120)
// qualifies.

#include "cluster_sort_kernel.cuh"

#include <cub/block/block_scan.cuh>

namespace
{

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kStepsPerWarp = 8;                       // 32-position steps per warp
constexpr int kWarpSpan = 32 * kStepsPerWarp;          // positions per warp: 256
constexpr int kTileSize = kWarps * kWarpSpan;          // positions per block: 2048
constexpr int kScanItems = LCOAN_CLUSTER_SORT_MAX_CLUSTERS / kThreads; // 4
constexpr int kMaxGridY = 65535;                       // batch rows per launch
constexpr size_t kAlign = 256;
constexpr int kMaxN = 0x7fffffff - kTileSize;          // tile arithmetic stays in int32

static_assert(kScanItems * kThreads >= LCOAN_CLUSTER_SORT_MAX_CLUSTERS, "K bins must fit one block scan");

struct WorkspaceLayout
{
    size_t countsOffset; // int32 [B][K][numTiles]
    size_t totalsOffset; // int32 [B][K]
    size_t total;        // bytes
};

inline size_t alignUp(size_t x)
{
    return (x + kAlign - 1) / kAlign * kAlign;
}

inline int numTilesFor(int N)
{
    return static_cast<int>((static_cast<int64_t>(N) + kTileSize - 1) / kTileSize);
}

inline WorkspaceLayout layoutFor(int B, int N, int K)
{
    WorkspaceLayout l{0, 0, 0};
    size_t const bins = static_cast<size_t>(B) * static_cast<size_t>(K);
    l.countsOffset = 0;
    l.totalsOffset = alignUp(bins * static_cast<size_t>(numTilesFor(N)) * sizeof(int32_t));
    l.total = l.totalsOffset + alignUp(bins * sizeof(int32_t));
    return l;
}

__device__ __forceinline__ int clampKey(int32_t id, int K)
{
    return min(max(id, 0), K - 1);
}

__device__ __forceinline__ unsigned laneMaskLt(int lane)
{
    return (1u << lane) - 1u;
}

// 1. counts[b][k][tile] = #{positions of the tile with key k}
__global__ void __launch_bounds__(kThreads) tileHistogramKernel(
    int32_t const* __restrict__ ids, int32_t* __restrict__ counts, int N, int K, int numTiles, int batchOffset)
{
    extern __shared__ int32_t sHist[]; // [K]
    int const tile = blockIdx.x;
    int64_t const b = static_cast<int64_t>(blockIdx.y) + batchOffset;
    int const lane = threadIdx.x & 31;

    for (int k = threadIdx.x; k < K; k += kThreads)
    {
        sHist[k] = 0;
    }
    __syncthreads();

    int32_t const* row = ids + b * N;
    int const tileStart = tile * kTileSize;
#pragma unroll
    for (int i = 0; i < kTileSize / kThreads; ++i)
    {
        int const pos = tileStart + i * kThreads + threadIdx.x; // coalesced; order is irrelevant here
        bool const valid = pos < N;
        int const key = valid ? clampKey(__ldg(row + pos), K) : -1;
        unsigned const peers = __match_any_sync(0xffffffffu, key);
        if (valid && lane == __ffs(peers) - 1)
        {
            atomicAdd(&sHist[key], __popc(peers));
        }
    }
    __syncthreads();

    int32_t* out = counts + b * K * numTiles + tile;
    for (int k = threadIdx.x; k < K; k += kThreads)
    {
        out[static_cast<int64_t>(k) * numTiles] = sHist[k];
    }
}

// 2. counts[b][k][:] <- exclusive prefix over tiles; totals[b][k] = row total
__global__ void __launch_bounds__(kThreads) tileScanKernel(
    int32_t* __restrict__ counts, int32_t* __restrict__ totals, int K, int numTiles, int batchOffset)
{
    using BlockScan = cub::BlockScan<int32_t, kThreads>;
    __shared__ typename BlockScan::TempStorage tmp;

    int const k = blockIdx.x;
    int64_t const b = static_cast<int64_t>(blockIdx.y) + batchOffset;
    int32_t* row = counts + (b * K + k) * numTiles;

    int32_t running = 0;
    for (int start = 0; start < numTiles; start += kThreads)
    {
        int const t = start + threadIdx.x;
        int32_t const v = t < numTiles ? row[t] : 0;
        int32_t excl = 0;
        int32_t aggregate = 0;
        BlockScan(tmp).ExclusiveSum(v, excl, aggregate);
        if (t < numTiles)
        {
            row[t] = running + excl;
        }
        running += aggregate;
        __syncthreads(); // tmp is reused by the next chunk
    }
    if (threadIdx.x == 0)
    {
        totals[b * K + k] = running;
    }
}

// 3. stable scatter: perm[b][slot] = pos, inv[b][pos] = slot
__global__ void __launch_bounds__(kThreads) scatterKernel(int32_t const* __restrict__ ids,
    int32_t const* __restrict__ counts, int32_t const* __restrict__ totals, int32_t* __restrict__ perm,
    int32_t* __restrict__ inv, int N, int K, int numTiles, int batchOffset)
{
    using BlockScan = cub::BlockScan<int32_t, kThreads>;
    __shared__ typename BlockScan::TempStorage tmp;
    extern __shared__ int32_t sCnt[]; // [kWarps][K]

    int const tile = blockIdx.x;
    int64_t const b = static_cast<int64_t>(blockIdx.y) + batchOffset;
    int const warp = threadIdx.x >> 5;
    int const lane = threadIdx.x & 31;
    int32_t* myCnt = sCnt + warp * K;

    for (int i = threadIdx.x; i < kWarps * K; i += kThreads)
    {
        sCnt[i] = 0;
    }
    __syncthreads();

    // a) per-warp counts over the warp's contiguous sub-tile (keys kept in registers)
    int32_t const* row = ids + b * N;
    int const warpStart = tile * kTileSize + warp * kWarpSpan;
    int keys[kStepsPerWarp];
#pragma unroll
    for (int s = 0; s < kStepsPerWarp; ++s)
    {
        int const pos = warpStart + s * 32 + lane;
        keys[s] = pos < N ? clampKey(__ldg(row + pos), K) : -1;
        unsigned const peers = __match_any_sync(0xffffffffu, keys[s]);
        if (keys[s] >= 0 && lane == __ffs(peers) - 1)
        {
            myCnt[keys[s]] += __popc(peers); // warp-private row: no atomics needed
        }
        __syncwarp();
    }
    __syncthreads();

    // b) + c) first slot of key k for each warp of this tile
    {
        int32_t base[kScanItems];
#pragma unroll
        for (int j = 0; j < kScanItems; ++j)
        {
            int const k = threadIdx.x * kScanItems + j; // blocked arrangement
            base[j] = k < K ? totals[b * K + k] : 0;
        }
        BlockScan(tmp).ExclusiveSum(base, base);
#pragma unroll
        for (int j = 0; j < kScanItems; ++j)
        {
            int const k = threadIdx.x * kScanItems + j;
            if (k < K)
            {
                int32_t running = base[j] + counts[(b * K + k) * numTiles + tile];
                for (int w = 0; w < kWarps; ++w)
                {
                    int32_t const c = sCnt[w * K + k];
                    sCnt[w * K + k] = running;
                    running += c;
                }
            }
        }
    }
    __syncthreads();

    // d) stable ranks inside the warp, in position order
    int32_t* permRow = perm + b * N;
    int32_t* invRow = inv + b * N;
#pragma unroll
    for (int s = 0; s < kStepsPerWarp; ++s)
    {
        int const key = keys[s];
        unsigned const peers = __match_any_sync(0xffffffffu, key);
        int const rank = __popc(peers & laneMaskLt(lane));
        if (key >= 0)
        {
            int const pos = warpStart + s * 32 + lane;
            int const slot = myCnt[key] + rank;
            permRow[slot] = pos;
            invRow[pos] = slot;
        }
        __syncwarp();
        if (key >= 0 && rank == 0)
        {
            myCnt[key] += __popc(peers);
        }
        __syncwarp();
    }
}

} // namespace

extern "C" size_t lcoanClusterSortWorkspaceSize(int B, int N, int K)
{
    if (B <= 0 || N <= 0 || N > kMaxN || K < 1 || K > LCOAN_CLUSTER_SORT_MAX_CLUSTERS)
    {
        return 0;
    }
    return layoutFor(B, N, K).total;
}

extern "C" int lcoanClusterSort(const int32_t* ids, int32_t* perm, int32_t* inv, int B, int N, int K,
    void* workspace, size_t workspaceSize, cudaStream_t stream)
{
    if (B < 0 || N < 0 || K < 1 || K > LCOAN_CLUSTER_SORT_MAX_CLUSTERS)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    if (B == 0 || N == 0)
    {
        return static_cast<int>(cudaSuccess);
    }
    if (N > kMaxN)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    WorkspaceLayout const l = layoutFor(B, N, K);
    if (ids == nullptr || perm == nullptr || inv == nullptr || workspace == nullptr || workspaceSize < l.total)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }

    auto* ws = static_cast<char*>(workspace);
    auto* counts = reinterpret_cast<int32_t*>(ws + l.countsOffset);
    auto* totals = reinterpret_cast<int32_t*>(ws + l.totalsOffset);
    int const numTiles = numTilesFor(N);
    size_t const histSmem = static_cast<size_t>(K) * sizeof(int32_t);
    size_t const scatterSmem = static_cast<size_t>(kWarps) * K * sizeof(int32_t); // <= 32 KiB

    for (int b0 = 0; b0 < B; b0 += kMaxGridY)
    {
        unsigned const rows = static_cast<unsigned>(B - b0 < kMaxGridY ? B - b0 : kMaxGridY);
        tileHistogramKernel<<<dim3(numTiles, rows), kThreads, histSmem, stream>>>(ids, counts, N, K, numTiles, b0);
        tileScanKernel<<<dim3(K, rows), kThreads, 0, stream>>>(counts, totals, K, numTiles, b0);
        scatterKernel<<<dim3(numTiles, rows), kThreads, scatterSmem, stream>>>(
            ids, counts, totals, perm, inv, N, K, numTiles, b0);
    }
    return static_cast<int>(cudaGetLastError());
}
