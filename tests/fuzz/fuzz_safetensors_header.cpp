// libFuzzer target: any byte string as the start of a safetensors file must parse or raise
// ftl::Error; never crash, hang or read out of bounds (ASan checks the last).
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        // The whole input is the file; also pretend the file is longer than what we hold, which
        // the parser must treat as "tensors do not cover the buffer", not read.
        ftl::io::parse_safetensors_header(reinterpret_cast<const std::byte*>(data), size, size, "fuzz");
        ftl::io::parse_safetensors_header(reinterpret_cast<const std::byte*>(data), size, size + 64, "fuzz");
    } catch (const ftl::Error&) {
    }
    return 0;
}
