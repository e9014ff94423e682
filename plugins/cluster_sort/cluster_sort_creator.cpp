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
// PluginFieldType::kINT64's value; spelled numerically so that the source does not depend on the exact
// minor version in which the enumerator appeared in the headers. ONNX int attributes normally arrive as
// kINT32 (the type getFieldNames() declares); int64 is accepted too.
constexpr int32_t kPLUGIN_FIELD_TYPE_INT64 = 10;
} // namespace

LCoAClusterSortPluginCreator::LCoAClusterSortPluginCreator()
{
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
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        // Same fields in the build phase (ONNX attributes) and the runtime phase (getFieldsToSerialize).
        int64_t numClusters = -1;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr || std::strcmp(f.name, kNUM_CLUSTERS_FIELD) != 0 || f.data == nullptr
                || f.length < 1)
            {
                continue;
            }
            if (f.type == PluginFieldType::kINT32)
            {
                numClusters = *static_cast<int32_t const*>(f.data);
            }
            else if (static_cast<int32_t>(f.type) == kPLUGIN_FIELD_TYPE_INT64)
            {
                numClusters = *static_cast<int64_t const*>(f.data);
            }
        }
        if (numClusters < 1 || numClusters > LCOAN_CLUSTER_SORT_MAX_CLUSTERS)
        {
            char msg[160];
            std::snprintf(msg, sizeof(msg),
                "LCoAClusterSort: attribute num_clusters must be an int in [1, %d], got %lld",
                LCOAN_CLUSTER_SORT_MAX_CLUSTERS, static_cast<long long>(numClusters));
            logError(msg);
            return nullptr;
        }
        return new LCoAClusterSortPlugin(static_cast<int32_t>(numClusters));
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace lcoan
