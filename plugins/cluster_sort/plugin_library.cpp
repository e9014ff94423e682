// Entry points of the LCoA TensorRT plugin library.
//
// TensorRT knows two ways for a plugin shared library to make its creators
// known (TensorRT developer guide, "Plugin Shared Libraries"; trtexec README):
//
//  1. Dynamic registration: the library exports
//         extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder*);
//         extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t&);
//     and TensorRT registers the creators itself when it loads the library with
//     IPluginRegistry::loadLibrary(): `trtexec --dynamicPlugins=...`,
//     `--setPluginsToSerialize=...` (library embedded in the plan),
//     `trt.get_plugin_registry().load_library(path)`.
//     -> liblcoan_plugins.so (this file without LCOAN_PLUGINS_STATIC_REGISTRATION).
//
//  2. Static registration at load time (what REGISTER_TENSORRT_PLUGIN does):
//     a global object registers the creator when the library is dlopen()ed:
//     `trtexec --staticPlugins=...`, `polygraphy run --plugins ...` (Polygraphy
//     loads plugin libraries with ctypes.CDLL), ctypes.CDLL in Python.
//     -> liblcoan_plugins_static.so (built with LCOAN_PLUGINS_STATIC_REGISTRATION).
//
// One binary doing both would register the creator twice when it is loaded
// through loadLibrary() (once from the static initialiser, once from
// getCreators()), so the two behaviours are two builds of the same sources.
// The static variant does not use the REGISTER_TENSORRT_PLUGIN macro itself:
// the macro's PluginRegistrar registers under the empty namespace "", while the
// creator and the ONNX node use the namespace "lcoan"; the registrar below does
// the same thing with the creator's namespace.
#include "cluster_sort_creator.h"
#include "cluster_sort_plugin.h"

#include "NvInferRuntime.h"

#include <cstdio>
#include <mutex>

namespace
{

class LoggerFinderHolder
{
public:
    void set(nvinfer1::ILoggerFinder* finder) noexcept
    {
        std::lock_guard<std::mutex> lock(mMutex);
        if (mFinder == nullptr && finder != nullptr)
        {
            mFinder = finder;
        }
    }

    nvinfer1::ILogger* logger() noexcept
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mFinder != nullptr ? mFinder->findLogger() : nullptr;
    }

private:
    std::mutex mMutex;
    nvinfer1::ILoggerFinder* mFinder{nullptr};
};

LoggerFinderHolder& loggerFinder() noexcept
{
    static LoggerFinderHolder holder;
    return holder;
}

lcoan::plugin::LCoAClusterSortPluginCreator& clusterSortCreator() noexcept
{
    static lcoan::plugin::LCoAClusterSortPluginCreator creator;
    return creator;
}

} // namespace

namespace lcoan
{
namespace plugin
{

void logError(char const* msg) noexcept
{
    nvinfer1::ILogger* logger = loggerFinder().logger();
    if (logger != nullptr)
    {
        logger->log(nvinfer1::ILogger::Severity::kERROR, msg);
    }
    else
    {
        std::fprintf(stderr, "[lcoan_plugins] ERROR: %s\n", msg);
    }
}

} // namespace plugin
} // namespace lcoan

#ifdef LCOAN_PLUGINS_STATIC_REGISTRATION

namespace
{
struct StaticRegistrar
{
    StaticRegistrar() noexcept
    {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr
            || !registry->registerCreator(clusterSortCreator(), lcoan::plugin::kCLUSTER_SORT_NAMESPACE))
        {
            lcoan::plugin::logError("could not register lcoan::LCoAClusterSort (already registered?)");
        }
    }
};
StaticRegistrar gStaticRegistrar;
} // namespace

#else // dynamic registration entry points

extern "C" TENSORRTAPI void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    loggerFinder().set(finder);
}

extern "C" TENSORRTAPI nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&clusterSortCreator()};
    nbCreators = static_cast<int32_t>(sizeof(kCreators) / sizeof(kCreators[0]));
    return kCreators;
}

#endif
