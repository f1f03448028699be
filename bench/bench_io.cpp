// The C++ half of bench/bench_io.py: times what the Python side times, on the same files.
//
//   ftl_bench_io load FILE.safetensors REPEATS
//     views: open the file and make a zero-copy at::Tensor over every tensor (what
//     safetensors.torch.load_file does on CPU: mmap-backed tensors);
//     copies: the same, then a private copy of every tensor (every byte read and written).
//     Prints the best wall time of each over REPEATS runs.
//   ftl_bench_io tokenize TOKENIZER_JSON DOCUMENTS_JSONL REPEATS
//     Encodes every document (one JSON string per line) on one thread. Prints the best time and
//     the token count.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/tensor_io.h"
#include "tokenizer/tokenizer.h"

using namespace ftl;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

int bench_load(const char* path, int repeats) {
    double best_views = 1e30, best_copies = 1e30;
    size_t bytes = 0;
    for (int r = 0; r < repeats; ++r) {
        auto start = Clock::now();
        std::shared_ptr<const io::SafetensorsFile> file = io::SafetensorsFile::open(path);
        std::vector<at::Tensor> views;
        for (const auto& entry : file->header().tensors) views.push_back(model::mapped_tensor(file, entry.name));
        best_views = std::min(best_views, seconds_since(start));
        file.reset();
        views.clear();

        start = Clock::now();
        file = io::SafetensorsFile::open(path);
        std::vector<at::Tensor> copies;
        bytes = 0;
        for (const auto& entry : file->header().tensors) {
            copies.push_back(model::mapped_tensor(file, entry.name).clone());
            bytes += copies.back().nbytes();
        }
        best_copies = std::min(best_copies, seconds_since(start));
    }
    std::printf("{\"views_seconds\": %.6f, \"copy_seconds\": %.6f, \"bytes\": %zu}\n", best_views, best_copies, bytes);
    return 0;
}

int bench_tokenize(const char* tokenizer_json, const char* documents_path, int repeats) {
    const auto tok = tokenizer::Tokenizer::from_file(tokenizer_json);
    std::vector<std::string> documents;
    std::ifstream in(documents_path);
    std::string line;
    size_t bytes = 0;
    while (std::getline(in, line)) {
        documents.push_back(nlohmann::json::parse(line).get<std::string>());
        bytes += documents.back().size();
    }
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < repeats; ++r) {
        auto start = Clock::now();
        tokens = 0;
        for (const auto& d : documents) tokens += tok.encode(d, false).size();
        best = std::min(best, seconds_since(start));
    }
    std::printf("{\"seconds\": %.6f, \"bytes\": %zu, \"tokens\": %zu}\n", best, bytes, tokens);
    return 0;
}

}  // namespace

int main(int argc, char** argv) try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "load" && argc == 4) return bench_load(argv[2], std::stoi(argv[3]));
    if (mode == "tokenize" && argc == 5) return bench_tokenize(argv[2], argv[3], std::stoi(argv[4]));
    std::fprintf(stderr, "usage: ftl_bench_io load FILE REPEATS | tokenize TOKENIZER_JSON DOCUMENTS_JSONL REPEATS\n");
    return 2;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_bench_io: %s\n", e.what());
    return 1;
}
