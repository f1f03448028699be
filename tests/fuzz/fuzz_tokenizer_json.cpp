// libFuzzer target: any text as tokenizer.json must load or raise ftl::Error; a tokenizer that
// loads must encode and decode a few strings without crashing, and encode_with_offsets must give
// the same ids, each with an ordered byte range inside the (lossy-replaced) input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        auto tok = ftl::tokenizer::Tokenizer::from_json_text(text, "fuzz");
        for (const char* sample : {"Hello world", "  你好 \n\t😀 <s>x</s>", "", "\xff\xfe bad utf8"}) {
            auto ids = tok.encode(sample, true);
            const auto tracked = tok.encode_with_offsets(sample, true);
            if (tracked.ids != ids || tracked.offsets.size() != ids.size()) std::abort();
            for (const auto& range : tracked.offsets)
                if (range.begin > range.end || range.end > tracked.text.size()) std::abort();
            tok.decode(ids, false);
            tok.decode(ids, true);
        }
        tok.decode({0, 1, 2, -1, 1 << 30}, false);
    } catch (const ftl::Error&) {
    }
    return 0;
}
