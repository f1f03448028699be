// Test helper for the tokenizer parity test (tests/parity/test_tokenizer_parity.py): encodes and
// decodes every line of a JSON-lines corpus with ftlaunch's tokenizer.
//
//   ftl_tokenizer_probe TOKENIZER_JSON CORPUS_JSONL OUTPUT_JSONL
// Each input line is a JSON string. Each output line is
//   {"ids": [...], "ids_special": [...], "decoded": "...", "decoded_skip": "..."}
// (ids with add_special_tokens false / true; decode of `ids` keeping / skipping special tokens).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

using namespace ftl;

int main(int argc, char** argv) try {
    if (argc != 4) {
        std::fprintf(stderr, "usage: ftl_tokenizer_probe TOKENIZER_JSON CORPUS_JSONL OUTPUT_JSONL\n");
        return 2;
    }
    const auto tok = tokenizer::Tokenizer::from_file(argv[1]);
    std::ifstream in(argv[2]);
    std::ofstream out(argv[3]);
    std::string line;
    while (std::getline(in, line)) {
        const std::string text = nlohmann::json::parse(line).get<std::string>();
        const auto ids = tok.encode(text, false);
        nlohmann::json result = {{"ids", ids},
                                 {"ids_special", tok.encode(text, true)},
                                 {"decoded", tok.decode(ids, false)},
                                 {"decoded_skip", tok.decode(ids, true)}};
        out << result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_tokenizer_probe: %s\n", e.what());
    return 1;
}
