// Host-side checks of liblcoan_plugins_trt<N>.so without a GPU and without a TensorRT library:
// loads the plugin library with dlopen (as IPluginRegistry::loadLibrary does), finds getCreators and
// setLoggerFinder, and drives the creator and the plugin through the build -> serialize -> runtime
// lifecycle that TensorRT follows. Prints key=value lines; tests/test_plugins.py asserts on them.
//
//   lcoan_plugin_host_test <path/to/liblcoan_plugins_trtN.so>
//
// enqueue() is only called where the kernel must refuse before touching any memory (workspace too
// small), so host buffers stand in for device buffers and the program never launches a kernel.
#include "NvInferRuntime.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            last = msg != nullptr ? msg : "";
        }
    }
    std::string last;
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() noexcept override
    {
        return &logger;
    }
    CapturingLogger logger;
};

// ONNX-style attribute sets the creator must refuse, and one it must accept.
struct FieldCase
{
    char const* label;
    PluginFieldType type;
    int32_t i32;
    float f32;
    bool present;
};

void printMessage(char const* key, std::string const& msg)
{
    std::string oneLine = msg;
    for (char& c : oneLine)
    {
        c = (c == '\n') ? ' ' : c;
    }
    std::printf("%s=%s\n", key, oneLine.c_str());
}

Dims dims2(int64_t b, int64_t n)
{
    Dims d{};
    d.nbDims = 2;
    d.d[0] = b;
    d.d[1] = n;
    return d;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s <liblcoan_plugins_trtN.so>\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        std::printf("dlopen=%s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    std::printf("getCreators=%s\nsetLoggerFinder=%s\n", getCreators ? "found" : "missing",
        setLoggerFinder ? "found" : "missing");
    if (getCreators == nullptr || setLoggerFinder == nullptr)
    {
        return 1;
    }
    static Finder finder;
    setLoggerFinder(&finder);

    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    std::printf("creators=%d\n", nbCreators);
    if (nbCreators != 1 || creators == nullptr || creators[0] == nullptr)
    {
        return 1;
    }
    InterfaceInfo const info = creators[0]->getInterfaceInfo();
    std::printf("creator_kind=%s\n", info.kind);
    if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return 1;
    }
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    std::printf("plugin=%s::%s/%s\n", creator->getPluginNamespace(), creator->getPluginName(),
        creator->getPluginVersion());

    // --- creator: bad num_clusters are refused with a message, not a crash ---------------------
    FieldCase const cases[] = {
        {"zero", PluginFieldType::kINT32, 0, 0.f, true},
        {"above_max", PluginFieldType::kINT32, 1025, 0.f, true},
        {"missing", PluginFieldType::kINT32, 0, 0.f, false},
        {"float", PluginFieldType::kFLOAT32, 0, 64.f, true},
        {"ok", PluginFieldType::kINT32, 64, 0.f, true},
    };
    for (FieldCase const& c : cases)
    {
        finder.logger.last.clear();
        PluginField field("num_clusters", c.type == PluginFieldType::kFLOAT32 ? static_cast<void const*>(&c.f32)
                                                                               : static_cast<void const*>(&c.i32),
            c.type, 1);
        PluginFieldCollection fc{};
        fc.nbFields = c.present ? 1 : 0;
        fc.fields = c.present ? &field : nullptr;
        IPluginV3* p = creator->createPlugin("cs", &fc, TensorRTPhase::kBUILD);
        std::printf("create_%s=%s\n", c.label, p != nullptr ? "plugin" : "null");
        printMessage((std::string("create_") + c.label + "_error").c_str(), finder.logger.last);
        delete p;
    }

    // --- build phase: profile max [1, 4096], K = 64 -------------------------------------------
    int32_t const k = 64;
    PluginField const kField("num_clusters", &k, PluginFieldType::kINT32, 1);
    PluginFieldCollection const buildFc{1, &kField};
    IPluginV3* built = creator->createPlugin("cs", &buildFc, TensorRTPhase::kBUILD);
    if (built == nullptr)
    {
        return 1;
    }
    auto* build = static_cast<IPluginV3OneBuild*>(built->getCapabilityInterface(PluginCapabilityType::kBUILD));
    DynamicPluginTensorDesc in[1]{};
    DynamicPluginTensorDesc out[2]{};
    for (DynamicPluginTensorDesc* d : {&in[0], &out[0], &out[1]})
    {
        d->desc.dims = dims2(-1, -1);
        d->desc.type = DataType::kINT32;
        d->desc.format = TensorFormat::kLINEAR;
        d->min = dims2(1, 1);
        d->opt = dims2(1, 1024);
        d->max = dims2(1, 4096);
    }
    int32_t const cfg = build->configurePlugin(in, 1, out, 2);
    size_t const reserved = build->getWorkspaceSize(in, 1, out, 2);
    std::printf("configure=%d\nworkspace_reserved=%zu\n", cfg, reserved);

    auto* buildRuntime
        = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* serialized = buildRuntime->getFieldsToSerialize();
    for (int32_t i = 0; serialized != nullptr && i < serialized->nbFields; ++i)
    {
        PluginField const& f = serialized->fields[i];
        long long v = f.type == PluginFieldType::kINT64 ? *static_cast<int64_t const*>(f.data)
                                                        : *static_cast<int32_t const*>(f.data);
        std::printf("serialized_%s=%lld\n", f.name, v);
    }

    // --- runtime phase: recreated from the serialized fields, as deserialization does ---------
    IPluginV3* runtimePlugin = creator->createPlugin("cs", serialized, TensorRTPhase::kRUNTIME);
    if (runtimePlugin == nullptr)
    {
        return 1;
    }
    auto* runtime
        = static_cast<IPluginV3OneRuntime*>(runtimePlugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));

    // ids [1, 8192]: twice the profile's max, so the kernel needs more than TensorRT reserved.
    int64_t const n = 8192;
    size_t const guardBytes = 4096;
    std::vector<unsigned char> workspace(reserved + guardBytes, 0xa5);
    std::vector<int32_t> ids(n, 1);
    std::vector<int32_t> perm(n, -7);
    std::vector<int32_t> inv(n, -7);
    PluginTensorDesc rin[1]{};
    PluginTensorDesc rout[2]{};
    for (PluginTensorDesc* d : {&rin[0], &rout[0], &rout[1]})
    {
        d->dims = dims2(1, n);
        d->type = DataType::kINT32;
        d->format = TensorFormat::kLINEAR;
    }
    std::printf("on_shape_change=%d\n", runtime->onShapeChange(rin, 1, rout, 2));
    finder.logger.last.clear();
    void const* inputs[1] = {ids.data()};
    void* outputs[2] = {perm.data(), inv.data()};
    int32_t const rc = runtime->enqueue(rin, rout, inputs, outputs, workspace.data(), nullptr);
    bool untouched = true;
    for (unsigned char b : workspace)
    {
        untouched = untouched && b == 0xa5;
    }
    for (int64_t i = 0; i < n; ++i)
    {
        untouched = untouched && perm[i] == -7 && inv[i] == -7;
    }
    std::printf("enqueue_too_small=%d\n", rc);
    printMessage("enqueue_too_small_error", finder.logger.last);
    std::printf("buffers_untouched=%s\n", untouched ? "yes" : "no");

    delete runtimePlugin;
    delete built;
    std::printf("done=1\n");
    return 0;
}
