// libFuzzer target: any bytes as a tokenised-rows cache file (data/row_cache.h) must read back
// as rows or raise ftl::Error. Rows that come out must lie inside the stored columns (ASan
// checks the reads) and have equally long columns; the key is "fuzz".
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "data/row_cache.h"
#include "fuzz_files.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string path = ftl::fuzz::scratch_dir() + "/rows.safetensors";
    ftl::fuzz::write_file(path, data, size);
    try {
        const auto rows = ftl::data::read_row_cache(path, "fuzz");
        for (const auto& row : rows.value()) {
            if (row.labels.size() != row.input_ids.size() || row.position_ids.size() != row.input_ids.size()) {
                std::fprintf(stderr, "fuzz_row_cache: a row with columns of different lengths\n");
                std::abort();
            }
        }
    } catch (const ftl::Error&) {
    }
    return 0;
}
