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
//
// Exports: TENSORRTAPI expands to nothing unless TENSORRT_BUILD_LIB is defined
// (it is meant for libnvinfer itself), so it cannot export our entry points.
// LCOAN_PLUGIN_EXPORT does, and the linker version scripts beside this file
// (lcoan_plugins.map, lcoan_plugins_static.map) hide everything else, the
// statically linked CUDA runtime included.
// The static variant does not use the REGISTER_TENSORRT_PLUGIN macro itself:
// the macro's PluginRegistrar registers under the empty namespace "", while the
// creator and the ONNX node use the namespace "lcoan"; the registrar below does
// the same thing with the creator's namespace.
#include "cluster_sort_creator.h"
#include "cluster_sort_plugin.h"

#include "NvInferRuntime.h"

#include <cstdio>
#include <dlfcn.h>
#include <mutex>

#define LCOAN_PLUGIN_EXPORT __attribute__((visibility("default")))
#define LCOAN_STR_(x) #x
#define LCOAN_STR(x) LCOAN_STR_(x)

#ifdef LCOAN_PLUGINS_STATIC_REGISTRATION
#define LCOAN_REGISTRATION "static"
#else
#define LCOAN_REGISTRATION "dynamic"
#endif

// The TensorRT version of the headers this binary was compiled against, readable from the file
// without loading it: plugins/loader.py and export/to_trt.py refuse a library built for another
// TensorRT major before TensorRT can crash on a mismatched plugin ABI.
extern "C" __attribute__((used)) char const lcoanPluginsBuildInfo[]
    = "lcoan-plugins:tensorrt=" LCOAN_STR(NV_TENSORRT_MAJOR) "." LCOAN_STR(NV_TENSORRT_MINOR) "." LCOAN_STR(
        NV_TENSORRT_PATCH) ";registration=" LCOAN_REGISTRATION ";";

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

// Weak, so that the library loads whether or not it was linked against libnvinfer: when
// TensorRT's library was opened RTLD_LOCAL (Python bindings), the symbol is not global and
// the registry is looked up in the already-loaded TensorRT library instead.
#pragma weak getPluginRegistry

namespace
{
nvinfer1::IPluginRegistry* findPluginRegistry() noexcept
{
    if (&getPluginRegistry != nullptr)
    {
        return getPluginRegistry();
    }
    // RTLD_NOLOAD: only a TensorRT the process already loaded; never pull one in from here.
    char const* const kRuntimes[] = {"libnvinfer.so." LCOAN_STR(NV_TENSORRT_MAJOR),
#if NV_TENSORRT_MAJOR >= 11
        "libtensorrt_rtx.so.1", // TensorRT-RTX 1.x follows the TensorRT 11 plugin registry
#endif
        "libnvinfer.so"};
    for (char const* name : kRuntimes)
    {
        void* handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        using GetRegistry = nvinfer1::IPluginRegistry* (*) ();
        auto fn = reinterpret_cast<GetRegistry>(dlsym(handle, "getPluginRegistry"));
        nvinfer1::IPluginRegistry* registry = fn != nullptr ? fn() : nullptr;
        dlclose(handle); // drops only the reference NOLOAD added
        if (registry != nullptr)
        {
            return registry;
        }
    }
    return nullptr;
}

struct StaticRegistrar
{
    StaticRegistrar() noexcept
    {
        nvinfer1::IPluginRegistry* registry = findPluginRegistry();
        if (registry == nullptr)
        {
            lcoan::plugin::logError("could not register lcoan::LCoAClusterSort: no TensorRT library "
                                    "(libnvinfer.so." LCOAN_STR(NV_TENSORRT_MAJOR) ") is loaded in this process");
        }
        else if (!registry->registerCreator(clusterSortCreator(), lcoan::plugin::kCLUSTER_SORT_NAMESPACE))
        {
            lcoan::plugin::logError("could not register lcoan::LCoAClusterSort (already registered?)");
        }
    }
};
StaticRegistrar gStaticRegistrar;
} // namespace

#else // dynamic registration entry points

extern "C" LCOAN_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    loggerFinder().set(finder);
}

extern "C" LCOAN_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&clusterSortCreator()};
    nbCreators = static_cast<int32_t>(sizeof(kCreators) / sizeof(kCreators[0]));
    return kCreators;
}

#endif
