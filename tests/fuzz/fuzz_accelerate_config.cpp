// libFuzzer target: any text as the accelerate config file of a launch (`ftlaunch --config_file
// F train ...`) must resolve — accelerate keys, launcher defaults, FSDP mapped onto ZeRO, the
// DeepSpeed section with its autos filled from the training flags — or raise ftl::Error. A config
// that loads must also survive its own round trip: to_yaml() read back gives the same config
// (to_json() equal); a failed round trip aborts, so the fuzzer reports it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config/accelerate_config.h"
#include "config/run_config.h"
#include "fuzz_files.h"
#include "util/error.h"

namespace {

void check_round_trip(const ftl::config::AccelerateConfig& config) {
    const std::string yaml = ftl::config::to_yaml(config);
    try {
        const auto again = ftl::config::parse_accelerate_config(yaml, "round trip");
        if (again.config.to_json() == config.to_json()) return;
        std::fprintf(stderr, "round trip changed the config:\n%s\nvs\n%s\n", config.to_json().dump().c_str(),
                     again.config.to_json().dump().c_str());
    } catch (const ftl::Error& e) {
        std::fprintf(stderr, "to_yaml wrote YAML that does not load: %s\n%s\n", e.what(), yaml.c_str());
    }
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        check_round_trip(ftl::config::parse_accelerate_config(text, "fuzz.yaml").config);
    } catch (const ftl::Error&) {
        return 0;
    }
    const std::string path = ftl::fuzz::scratch_dir() + "/config.yaml";
    ftl::fuzz::write_file(path, data, size);
    ftl::config::LauncherFlags flags;
    flags.config_file = path;
    try {
        const auto run = ftl::config::resolve_run_config(
            flags, "train", {"--model_name_or_path", "model", "--dataset_name", "data", "--output_dir", "out"});
        (void)run.to_json().dump();
    } catch (const ftl::Error&) {
    }
    return 0;
}
