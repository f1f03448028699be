// libFuzzer target: any text as a DeepSpeed JSON config must load or raise ftl::Error; one that
// loads must take either mixed precision, resolve its "auto" values against the default training
// flags for world sizes 1, 2 and 8 and a hidden size, and print, or raise ftl::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/deepspeed_config.h"
#include "config/train_args.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    ftl::config::BuiltDeepSpeedConfig built;
    try {
        built = ftl::config::parse_deepspeed_json(text, "fuzz.json");
    } catch (const ftl::Error&) {
        return 0;
    }
    const auto args = ftl::config::default_train_args(ftl::config::JobKind::kSft);
    for (auto precision : {ftl::config::MixedPrecision::kBf16, ftl::config::MixedPrecision::kFp16}) {
        for (int world : {1, 2, 8}) {
            auto ds = built.config;
            try {
                ftl::config::apply_mixed_precision(ds, precision);
                ftl::config::resolve_with_train_args(ds, args, world);
                ftl::config::resolve_with_hidden_size(ds, 4096);
                (void)ds.to_json().dump();
            } catch (const ftl::Error&) {
            }
        }
    }
    return 0;
}
