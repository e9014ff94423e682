// LCoAClusterSort TensorRT plugin (IPluginV3: OneCore + OneBuild + OneRuntime).
//
// ONNX node: op_type "LCoAClusterSort", domain "lcoan", attributes
//   plugin_version = "1", plugin_namespace = "lcoan", num_clusters (int, 1..1024)
// Input  0: ids  int32 [B, N] (or [N]), linear
// Output 0: perm int32, same shape: perm[b, slot] = position
// Output 1: inv  int32, same shape: inv[b, position] = slot
// Stable sort by clamp(id, 0, num_clusters - 1); see lcoan/opspec.py, the spec these constants
// are tested against (tests/test_opspec.py).
//
// Written against the TensorRT 10.3 plugin API (JetPack 6) and newer; uses no
// interface introduced after 10.3 (e.g. no IPluginV3OneBuildV2).
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lcoan
{
namespace plugin
{

constexpr char const* kCLUSTER_SORT_NAME = "LCoAClusterSort";
constexpr char const* kCLUSTER_SORT_VERSION = "1";
constexpr char const* kCLUSTER_SORT_NAMESPACE = "lcoan";
constexpr char const* kNUM_CLUSTERS_FIELD = "num_clusters";
//! Serialized with the engine only (not an ONNX attribute): the workspace TensorRT reserved for the
//! layer, i.e. what getWorkspaceSize() returned for the profile's max shape. enqueue() gets no size
//! argument, so this is how the runtime instance knows it.
constexpr char const* kWORKSPACE_BYTES_FIELD = "workspace_bytes";

//! Report an error through the TensorRT logger (found via setLoggerFinder) or stderr.
void logError(char const* msg) noexcept;

class LCoAClusterSortPlugin : public nvinfer1::IPluginV3,
                              public nvinfer1::IPluginV3OneCore,
                              public nvinfer1::IPluginV3OneBuild,
                              public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit LCoAClusterSortPlugin(int32_t numClusters, int64_t workspaceBytes = 0);
    LCoAClusterSortPlugin(LCoAClusterSortPlugin const& other);
    LCoAClusterSortPlugin& operator=(LCoAClusterSortPlugin const&) = delete;
    ~LCoAClusterSortPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    int32_t numClusters() const noexcept
    {
        return mNumClusters;
    }

    //! Workspace bytes TensorRT reserves for this layer (0 = not known yet).
    int64_t workspaceBytes() const noexcept
    {
        return mWorkspaceBytes;
    }

private:
    void initFieldsToSerialize();
    void noteWorkspace(nvinfer1::Dims const& maxDims) const noexcept;

    int32_t mNumClusters;
    // Largest size getWorkspaceSize() reported (one call per profile): what TensorRT reserves.
    // Mutable because getWorkspaceSize() is const.
    mutable int64_t mWorkspaceBytes;
    std::vector<nvinfer1::PluginField> mDataToSerialize;
    nvinfer1::PluginFieldCollection mFCToSerialize{};
};

} // namespace plugin
} // namespace lcoan
