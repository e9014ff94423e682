// Creator for the LCoAClusterSort plugin: name "LCoAClusterSort", version "1",
// namespace "lcoan", one field "num_clusters" (int32, 1..1024).
#pragma once

#include "NvInferRuntime.h"

#include <vector>

namespace lcoan
{
namespace plugin
{

class LCoAClusterSortPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    LCoAClusterSortPluginCreator();
    ~LCoAClusterSortPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mPluginAttributes;
    nvinfer1::PluginFieldCollection mFC{};
};

} // namespace plugin
} // namespace lcoan
