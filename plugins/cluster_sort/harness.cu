// ctypes harness for the LCoAClusterSort kernels (no TensorRT).
//
// Host arrays in, host arrays out: allocates device memory, copies ids in, runs
// lcoanClusterSort on a private stream, copies perm/inv back and optionally
// times repeated launches with cudaEvents. Used by tests/test_plugins.py and
// benchmarks/cluster_sort.py through plugins/loader.py.
//
// perm and inv are allocated with guard zones of kGuard int32 on both sides,
// pre-filled with a pattern; any kernel write outside [0, B*N) is reported as
// LCOAN_HARNESS_OUT_OF_BOUNDS. Untouched outputs keep the value -1.

#include "cluster_sort_kernel.cuh"

#include <cuda_runtime.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define LCOAN_HARNESS_OUT_OF_BOUNDS (-2)

namespace
{

constexpr size_t kGuard = 4096;
constexpr unsigned char kGuardByte = 0x5a;

struct DeviceBuffers
{
    int32_t* ids{nullptr};
    int32_t* perm{nullptr}; // kGuard + n + kGuard
    int32_t* inv{nullptr};  // kGuard + n + kGuard
    void* workspace{nullptr};
    cudaStream_t stream{nullptr};
    cudaEvent_t start{nullptr};
    cudaEvent_t stop{nullptr};

    ~DeviceBuffers()
    {
        cudaFree(ids);
        cudaFree(perm);
        cudaFree(inv);
        cudaFree(workspace);
        if (start)
            cudaEventDestroy(start);
        if (stop)
            cudaEventDestroy(stop);
        if (stream)
            cudaStreamDestroy(stream);
    }
};

bool guardsIntact(int32_t const* devBuf, size_t n, cudaError_t* err)
{
    std::vector<unsigned char> host(kGuard * sizeof(int32_t));
    for (int side = 0; side < 2; ++side)
    {
        int32_t const* src = side == 0 ? devBuf : devBuf + kGuard + n;
        *err = cudaMemcpy(host.data(), src, host.size(), cudaMemcpyDeviceToHost);
        if (*err != cudaSuccess)
        {
            return false;
        }
        for (unsigned char c : host)
        {
            if (c != kGuardByte)
            {
                return false;
            }
        }
    }
    return true;
}

} // namespace

#define LCOAN_TRY(call)                                                                                                \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const e_ = (call);                                                                                 \
        if (e_ != cudaSuccess)                                                                                         \
            return static_cast<int>(e_);                                                                               \
    } while (0)

extern "C" {

//! Number of CUDA devices; returns a cudaError_t (non-zero when no driver/GPU).
int lcoanHarnessDeviceCount(int* count)
{
    *count = 0;
    cudaError_t const e = cudaGetDeviceCount(count);
    if (e != cudaSuccess)
    {
        *count = 0;
        cudaGetLastError(); // clear
    }
    return static_cast<int>(e);
}

//! Name of the current device (empty string on error).
int lcoanHarnessDeviceName(char* buf, int bufLen)
{
    if (bufLen > 0)
        buf[0] = '\0';
    int dev = 0;
    LCOAN_TRY(cudaGetDevice(&dev));
    cudaDeviceProp prop{};
    LCOAN_TRY(cudaGetDeviceProperties(&prop, dev));
    if (bufLen > 0)
    {
        strncpy(buf, prop.name, static_cast<size_t>(bufLen) - 1);
        buf[bufLen - 1] = '\0';
    }
    return 0;
}

const char* lcoanHarnessErrorString(int code)
{
    if (code == LCOAN_HARNESS_OUT_OF_BOUNDS)
        return "kernel wrote outside the perm/inv buffers";
    return cudaGetErrorString(static_cast<cudaError_t>(code));
}

size_t lcoanHarnessWorkspaceSize(int B, int N, int K)
{
    return lcoanClusterSortWorkspaceSize(B, N, K);
}

//! Sort host ids[B*N] into host perm/inv[B*N]. If timingIters > 0, afterwards
//! runs that many more launches between two cudaEvents and stores the mean
//! milliseconds per sort in *msPerSort (kernel time only, no copies).
int lcoanHarnessClusterSort(const int32_t* hostIds, int32_t* hostPerm, int32_t* hostInv, int B, int N, int K,
    int timingIters, float* msPerSort)
{
    if (msPerSort)
        *msPerSort = 0.f;
    if (B < 0 || N < 0)
        return static_cast<int>(cudaErrorInvalidValue);
    size_t const n = static_cast<size_t>(B) * static_cast<size_t>(N);
    size_t const bytes = n * sizeof(int32_t);
    size_t const guardedBytes = (n + 2 * kGuard) * sizeof(int32_t);
    size_t const wsBytes = lcoanClusterSortWorkspaceSize(B, N, K);

    DeviceBuffers d;
    LCOAN_TRY(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
    LCOAN_TRY(cudaMalloc(&d.ids, bytes > 0 ? bytes : 4));
    LCOAN_TRY(cudaMalloc(&d.perm, guardedBytes));
    LCOAN_TRY(cudaMalloc(&d.inv, guardedBytes));
    LCOAN_TRY(cudaMalloc(&d.workspace, wsBytes > 0 ? wsBytes : 256));
    // Every fill and copy goes on d.stream: a non-blocking stream is not ordered after work on
    // the legacy default stream (plain cudaMemset/cudaMemcpy), so the kernels could otherwise
    // read ids and workspace while those are still being written.
    LCOAN_TRY(cudaMemsetAsync(d.perm, kGuardByte, guardedBytes, d.stream));
    LCOAN_TRY(cudaMemsetAsync(d.inv, kGuardByte, guardedBytes, d.stream));
    LCOAN_TRY(cudaMemsetAsync(d.perm + kGuard, 0xff, bytes, d.stream));
    LCOAN_TRY(cudaMemsetAsync(d.inv + kGuard, 0xff, bytes, d.stream));
    // Garbage in the workspace must not matter: the kernels fully overwrite it.
    LCOAN_TRY(cudaMemsetAsync(d.workspace, 0x7b, wsBytes > 0 ? wsBytes : 256, d.stream));
    if (bytes > 0)
        LCOAN_TRY(cudaMemcpyAsync(d.ids, hostIds, bytes, cudaMemcpyHostToDevice, d.stream));

    int32_t* perm = d.perm + kGuard;
    int32_t* inv = d.inv + kGuard;
    int status = lcoanClusterSort(d.ids, perm, inv, B, N, K, d.workspace, wsBytes, d.stream);
    if (status != 0)
        return status;
    LCOAN_TRY(cudaStreamSynchronize(d.stream));

    cudaError_t err = cudaSuccess;
    if (!guardsIntact(d.perm, n, &err) || !guardsIntact(d.inv, n, &err))
        return err != cudaSuccess ? static_cast<int>(err) : LCOAN_HARNESS_OUT_OF_BOUNDS;
    if (bytes > 0)
    {
        LCOAN_TRY(cudaMemcpy(hostPerm, perm, bytes, cudaMemcpyDeviceToHost));
        LCOAN_TRY(cudaMemcpy(hostInv, inv, bytes, cudaMemcpyDeviceToHost));
    }

    if (timingIters > 0 && msPerSort)
    {
        LCOAN_TRY(cudaEventCreate(&d.start));
        LCOAN_TRY(cudaEventCreate(&d.stop));
        LCOAN_TRY(cudaEventRecord(d.start, d.stream));
        for (int i = 0; i < timingIters; ++i)
        {
            status = lcoanClusterSort(d.ids, perm, inv, B, N, K, d.workspace, wsBytes, d.stream);
            if (status != 0)
                return status;
        }
        LCOAN_TRY(cudaEventRecord(d.stop, d.stream));
        LCOAN_TRY(cudaEventSynchronize(d.stop));
        float ms = 0.f;
        LCOAN_TRY(cudaEventElapsedTime(&ms, d.start, d.stop));
        *msPerSort = ms / static_cast<float>(timingIters);
    }
    return 0;
}

} // extern "C"
