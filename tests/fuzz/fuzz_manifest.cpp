// libFuzzer target: any text as a checkpoint's manifest.json must verify or raise ftl::Error
// (never another exception, a crash or a read outside the folder). The folder holds two files
// of fixed content, so a well-formed manifest that matches them verifies:
//   adapter_model.safetensors  64 bytes 0,1,...,63      trainer_state.json  {"global_step": 3}
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_files.h"
#include "io/manifest.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string dir = [] {
        const std::string path = ftl::fuzz::scratch_dir() + "/checkpoint-3";
        std::filesystem::create_directories(path);
        uint8_t weights[64];
        for (int i = 0; i < 64; ++i) weights[i] = static_cast<uint8_t>(i);
        ftl::fuzz::write_file(path + "/adapter_model.safetensors", weights, sizeof weights);
        ftl::fuzz::write_file(path + "/trainer_state.json", R"({"global_step": 3})");
        return path;
    }();
    ftl::fuzz::write_file(dir + "/" + ftl::io::kManifestName, data, size);
    try {
        const auto verified = ftl::io::verify_manifest(dir);
        (void)verified.identity.dump();
    } catch (const ftl::Error&) {
    }
    return 0;
}
