#include "cluster_sort_creator.h"

#include "cluster_sort_kernel.cuh"
#include "cluster_sort_plugin.h"

#include <cstdio>
#include <cstring>
#include <exception>

using namespace nvinfer1;

namespace lcoan
{
namespace plugin
{
namespace
{

char const* fieldTypeName(PluginFieldType t) noexcept
{
    switch (t)
    {
    case PluginFieldType::kFLOAT16: return "float16";
    case PluginFieldType::kFLOAT32: return "float32";
    case PluginFieldType::kFLOAT64: return "float64";
    case PluginFieldType::kINT8: return "int8";
    case PluginFieldType::kINT16: return "int16";
    case PluginFieldType::kINT32: return "int32";
    case PluginFieldType::kCHAR: return "string";
    case PluginFieldType::kDIMS: return "dims";
    case PluginFieldType::kUNKNOWN: return "unknown";
    case PluginFieldType::kBF16: return "bfloat16";
    case PluginFieldType::kINT64: return "int64";
    case PluginFieldType::kFP8: return "fp8";
    default: return "another type";
    }
}

//! One int field: kINT32 (the type getFieldNames() declares, what ONNX int attributes become) or kINT64.
//! Returns false with a message for a missing, non-integer or non-scalar field.
bool readIntField(PluginFieldCollection const* fc, char const* name, bool required, int64_t& value, char* msg,
    size_t msgSize) noexcept
{
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr || std::strcmp(f.name, name) != 0)
        {
            continue;
        }
        if (f.type != PluginFieldType::kINT32 && f.type != PluginFieldType::kINT64)
        {
            std::snprintf(msg, msgSize, "LCoAClusterSort: attribute %s must be an int, got a %s", name,
                fieldTypeName(f.type));
            return false;
        }
        if (f.data == nullptr || f.length != 1)
        {
            std::snprintf(msg, msgSize, "LCoAClusterSort: attribute %s must be one int, got %d values", name,
                f.data == nullptr ? 0 : f.length);
            return false;
        }
        value = f.type == PluginFieldType::kINT32 ? *static_cast<int32_t const*>(f.data)
                                                  : *static_cast<int64_t const*>(f.data);
        return true;
    }
    if (required)
    {
        std::snprintf(msg, msgSize, "LCoAClusterSort: attribute %s is missing", name);
        return false;
    }
    return true;
}

} // namespace

LCoAClusterSortPluginCreator::LCoAClusterSortPluginCreator()
{
    // Only the ONNX attribute: workspace_bytes is written by the plugin itself into the engine.
    mPluginAttributes.clear();
    mPluginAttributes.emplace_back(kNUM_CLUSTERS_FIELD, nullptr, PluginFieldType::kINT32, 1);
    mFC.nbFields = static_cast<int32_t>(mPluginAttributes.size());
    mFC.fields = mPluginAttributes.data();
}

char const* LCoAClusterSortPluginCreator::getPluginName() const noexcept
{
    return kCLUSTER_SORT_NAME;
}

char const* LCoAClusterSortPluginCreator::getPluginVersion() const noexcept
{
    return kCLUSTER_SORT_VERSION;
}

char const* LCoAClusterSortPluginCreator::getPluginNamespace() const noexcept
{
    return kCLUSTER_SORT_NAMESPACE;
}

PluginFieldCollection const* LCoAClusterSortPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

IPluginV3* LCoAClusterSortPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    try
    {
        char msg[200];
        int64_t numClusters = 0;
        if (!readIntField(fc, kNUM_CLUSTERS_FIELD, true, numClusters, msg, sizeof(msg)))
        {
            logError(msg);
            return nullptr;
        }
        if (numClusters < 1 || numClusters > LCOAN_CLUSTER_SORT_MAX_CLUSTERS)
        {
            std::snprintf(msg, sizeof(msg),
                "LCoAClusterSort: attribute num_clusters must be an int in [1, %d], got %lld",
                LCOAN_CLUSTER_SORT_MAX_CLUSTERS, static_cast<long long>(numClusters));
            logError(msg);
            return nullptr;
        }
        // Runtime phase: the fields come from getFieldsToSerialize(), workspace_bytes included. In the
        // build phase (ONNX attributes) the plugin works it out from the profile instead.
        int64_t workspaceBytes = 0;
        if (phase == TensorRTPhase::kRUNTIME
            && (!readIntField(fc, kWORKSPACE_BYTES_FIELD, false, workspaceBytes, msg, sizeof(msg))
                || workspaceBytes < 0))
        {
            logError(workspaceBytes < 0 ? "LCoAClusterSort: negative workspace_bytes in the engine" : msg);
            return nullptr;
        }
        return new LCoAClusterSortPlugin(static_cast<int32_t>(numClusters), workspaceBytes);
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace lcoan
