// LCoAClusterSort TensorRT plugin; structure follows NVIDIA's sampleNonZeroPlugin (IPluginV3).
#include "cluster_sort_plugin.h"

#include "cluster_sort_kernel.cuh"

#include <atomic>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>

using namespace nvinfer1;

namespace lcoan
{
namespace plugin
{
namespace
{

constexpr int32_t kNB_INPUTS = 1;
constexpr int32_t kNB_OUTPUTS = 2;

//! Split dims [.., N] into B = product of leading dims and N = last dim.
//! Returns false when the shape does not fit the kernel's int32 arguments.
bool splitBatch(Dims const& d, int32_t& B, int32_t& N) noexcept
{
    if (d.nbDims < 1)
    {
        return false;
    }
    int64_t b = 1;
    for (int32_t i = 0; i + 1 < d.nbDims; ++i)
    {
        if (d.d[i] < 0)
        {
            return false;
        }
        b *= d.d[i];
        if (b > std::numeric_limits<int32_t>::max())
        {
            return false;
        }
    }
    int64_t const n = d.d[d.nbDims - 1];
    if (n < 0 || n > std::numeric_limits<int32_t>::max())
    {
        return false;
    }
    B = static_cast<int32_t>(b);
    N = static_cast<int32_t>(n);
    return true;
}

} // namespace

LCoAClusterSortPlugin::LCoAClusterSortPlugin(int32_t numClusters, int64_t workspaceBytes)
    : mNumClusters(numClusters)
    , mWorkspaceBytes(workspaceBytes)
{
    initFieldsToSerialize();
}

LCoAClusterSortPlugin::LCoAClusterSortPlugin(LCoAClusterSortPlugin const& other)
    : mNumClusters(other.mNumClusters)
    , mWorkspaceBytes(other.mWorkspaceBytes)
{
    // Never copy mDataToSerialize: its PluginField points at the other object's member.
    initFieldsToSerialize();
}

void LCoAClusterSortPlugin::initFieldsToSerialize()
{
    mDataToSerialize.clear();
    mDataToSerialize.emplace_back(kNUM_CLUSTERS_FIELD, &mNumClusters, PluginFieldType::kINT32, 1);
    mDataToSerialize.emplace_back(kWORKSPACE_BYTES_FIELD, &mWorkspaceBytes, PluginFieldType::kINT64, 1);
    mFCToSerialize.nbFields = static_cast<int32_t>(mDataToSerialize.size());
    mFCToSerialize.fields = mDataToSerialize.data();
}

// IPluginV3 --------------------------------------------------------------------------------------

IPluginCapability* LCoAClusterSortPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    if (type == PluginCapabilityType::kBUILD)
    {
        return static_cast<IPluginV3OneBuild*>(this);
    }
    if (type == PluginCapabilityType::kRUNTIME)
    {
        return static_cast<IPluginV3OneRuntime*>(this);
    }
    if (type == PluginCapabilityType::kCORE)
    {
        return static_cast<IPluginV3OneCore*>(this);
    }
    return nullptr;
}

IPluginV3* LCoAClusterSortPlugin::clone() noexcept
{
    try
    {
        return std::make_unique<LCoAClusterSortPlugin>(*this).release();
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

// IPluginV3OneCore -------------------------------------------------------------------------------

char const* LCoAClusterSortPlugin::getPluginName() const noexcept
{
    return kCLUSTER_SORT_NAME;
}

char const* LCoAClusterSortPlugin::getPluginVersion() const noexcept
{
    return kCLUSTER_SORT_VERSION;
}

char const* LCoAClusterSortPlugin::getPluginNamespace() const noexcept
{
    return kCLUSTER_SORT_NAMESPACE;
}

// IPluginV3OneBuild ------------------------------------------------------------------------------

int32_t LCoAClusterSortPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t LCoAClusterSortPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || in == nullptr || out == nullptr)
    {
        logError("LCoAClusterSort: expects 1 input and 2 outputs");
        return -1;
    }
    noteWorkspace(in[0].max);
    return 0;
}

bool LCoAClusterSortPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
        || pos >= kNB_INPUTS + kNB_OUTPUTS)
    {
        return false;
    }
    // ids, perm and inv: int32, linear (row-major) layout.
    return inOut[pos].desc.type == DataType::kINT32 && inOut[pos].desc.format == TensorFormat::kLINEAR;
}

int32_t LCoAClusterSortPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* /*inputTypes*/, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || nbOutputs != kNB_OUTPUTS || nbInputs != kNB_INPUTS)
    {
        return -1;
    }
    outputTypes[0] = DataType::kINT32;
    outputTypes[1] = DataType::kINT32;
    return 0;
}

int32_t LCoAClusterSortPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS
        || inputs[0].nbDims < 1)
    {
        logError("LCoAClusterSort: input must be ids [B, N] (or [N])");
        return -1;
    }
    outputs[0] = inputs[0];
    outputs[1] = inputs[0];
    return 0;
}

void LCoAClusterSortPlugin::noteWorkspace(Dims const& maxDims) const noexcept
{
    int32_t B = 0;
    int32_t N = 0;
    if (splitBatch(maxDims, B, N))
    {
        int64_t const bytes = static_cast<int64_t>(lcoanClusterSortWorkspaceSize(B, N, mNumClusters));
        mWorkspaceBytes = bytes > mWorkspaceBytes ? bytes : mWorkspaceBytes;
    }
}

size_t LCoAClusterSortPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (inputs == nullptr || nbInputs != kNB_INPUTS)
    {
        return 0;
    }
    // The kernel's workspace grows monotonically with B and N, so the profile's max shape covers all shapes.
    int32_t B = 0;
    int32_t N = 0;
    if (!splitBatch(inputs[0].max, B, N))
    {
        return 0;
    }
    noteWorkspace(inputs[0].max);
    return lcoanClusterSortWorkspaceSize(B, N, mNumClusters);
}

// IPluginV3OneRuntime ----------------------------------------------------------------------------

int32_t LCoAClusterSortPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    int32_t B = 0;
    int32_t N = 0;
    if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS
        || !splitBatch(in[0].dims, B, N))
    {
        logError("LCoAClusterSort: unsupported input shape");
        return -1;
    }
    return 0;
}

int32_t LCoAClusterSortPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    int32_t B = 0;
    int32_t N = 0;
    if (!splitBatch(inputDesc[0].dims, B, N))
    {
        logError("LCoAClusterSort: unsupported input shape");
        return -1;
    }
    size_t const needed = lcoanClusterSortWorkspaceSize(B, N, mNumClusters);
    size_t reserved = static_cast<size_t>(mWorkspaceBytes > 0 ? mWorkspaceBytes : 0);
    if (mWorkspaceBytes <= 0)
    {
        // Only an engine serialized without the field gets here; its size is not known, so the
        // kernel's own bounds check cannot help.
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true))
        {
            logError("LCoAClusterSort: the engine does not record its workspace size (built by an older "
                     "plugin); rebuild it so that the kernel can check the workspace");
        }
        reserved = needed;
    }
    int const status = lcoanClusterSort(static_cast<int32_t const*>(inputs[0]), static_cast<int32_t*>(outputs[0]),
        static_cast<int32_t*>(outputs[1]), B, N, mNumClusters, workspace, reserved, stream);
    if (status != 0)
    {
        char msg[256];
        if (needed > reserved)
        {
            std::snprintf(msg, sizeof(msg),
                "LCoAClusterSort: workspace too small for ids [%d, %d]: needs %zu bytes, TensorRT reserved %zu "
                "(shape above the profile the engine was built for?)",
                B, N, needed, reserved);
        }
        else
        {
            std::snprintf(msg, sizeof(msg), "LCoAClusterSort: kernel launch failed: %s",
                cudaGetErrorString(static_cast<cudaError_t>(status)));
        }
        logError(msg);
        return -1;
    }
    return 0;
}

IPluginV3* LCoAClusterSortPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* LCoAClusterSortPlugin::getFieldsToSerialize() noexcept
{
    return &mFCToSerialize;
}

} // namespace plugin
} // namespace lcoan
