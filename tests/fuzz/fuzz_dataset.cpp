// libFuzzer target: any bytes as a dataset file must read into records, tokenise and pack into
// training rows — or raise ftl::Error. The first byte picks how the rest is read and prepared:
//   bits 0-1  file kind: train.jsonl, train.json, train.parquet, train.arrow (Arrow IPC stream);
//   bit 7     instead: train.csv
//   bit 2     chatml: `messages` rendered in the ChatML format (else the `text` field)
//   bit 3     assistant_only_loss        bit 4  add_special_tokens
//   bit 5     append_concat_token        bit 6  packed rows (else one row per example)
// the second byte the row length (1..64 tokens). Rows that come out must be well formed: the
// three columns equally long, at most max_seq_len, ids non-negative and (unless the records are
// pre-tokenized `input_ids`, which the trainer checks against the model) inside the tokenizer's
// vocabulary, labels -100 or the id; anything else aborts.
// The tokenizer is the Llama-2-style tokenizer.json of the parity tests (FTL_FUZZ_TOKENIZER).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "data/best_fit_packing.h"
#include "data/dataset.h"
#include "data/examples.h"
#include "fuzz_files.h"
#include "tokenizer/chat_renderer.h"
#include "tokenizer/hf_tokenizer.h"
#include "util/error.h"
#include "util/files.h"

namespace {

using ftl::tokenizer::HfTokenizer;

// A model folder holding the test tokenizer, loaded plain and with the ChatML tokens added.
struct Tokenizers {
    HfTokenizer plain;
    HfTokenizer chatml;
};

const Tokenizers& tokenizers() {
    static const Tokenizers loaded = [] {
        const char* source = std::getenv("FTL_FUZZ_TOKENIZER");
        const auto json = source ? ftl::read_text_file(source) : std::nullopt;
        if (!json) {
            std::fprintf(stderr, "fuzz_dataset: set FTL_FUZZ_TOKENIZER to a tokenizer.json\n");
            std::abort();
        }
        const std::string dir = ftl::fuzz::scratch_dir() + "/model";
        std::filesystem::create_directories(dir);
        ftl::fuzz::write_file(dir + "/tokenizer.json", *json);
        ftl::fuzz::write_file(dir + "/tokenizer_config.json",
                              R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})");
        auto plain = HfTokenizer::load(dir);
        plain.set_pad_to_eos();
        auto chatml = HfTokenizer::load(dir, ftl::tokenizer::chat_special_tokens(ftl::tokenizer::ChatFormat::kChatml));
        return Tokenizers{std::move(plain), std::move(chatml)};
    }();
    return loaded;
}

void check_rows(const std::vector<ftl::data::Row>& rows, int64_t max_seq_len, int64_t vocab) {
    for (const auto& row : rows) {
        const size_t n = row.input_ids.size();
        bool ok = n >= 1 && static_cast<int64_t>(n) <= max_seq_len && row.labels.size() == n &&
                  row.position_ids.size() == n;
        for (size_t i = 0; ok && i < n; ++i)
            ok = row.input_ids[i] >= 0 && row.input_ids[i] < vocab &&
                 (row.labels[i] == -100 || row.labels[i] == row.input_ids[i]) && row.position_ids[i] >= 0;
        if (!ok) {
            std::fprintf(stderr, "fuzz_dataset: a malformed row of %zu tokens (max %lld)\n", n,
                         static_cast<long long>(max_seq_len));
            std::abort();
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const uint8_t mode = data[0];
    const int64_t max_seq_len = 1 + data[1] % 64;
    static const char* const kNames[] = {"train.jsonl", "train.json", "train.parquet", "train.arrow"};
    const std::string path = ftl::fuzz::scratch_dir() + "/" + ((mode & 128) ? "train.csv" : kNames[mode & 3]);
    ftl::fuzz::write_file(path, data + 2, size - 2);

    const bool chat = mode & 4;
    const HfTokenizer& tokenizer = chat ? tokenizers().chatml : tokenizers().plain;
    ftl::data::TextOptions options;
    if (chat) options.chat = std::make_shared<const ftl::tokenizer::ChatRenderer>(ftl::tokenizer::ChatFormat::kChatml);
    options.assistant_only_loss = mode & 8;
    options.add_special_tokens = mode & 16;
    options.append_concat_token = mode & 32;
    try {
        const auto records = ftl::data::read_split(path, "train");
        const auto examples = ftl::data::tokenize_records(records, tokenizer, options, "fuzz [train]");
        const int variant = data[1] >> 6;  // the packing strategy, or without packing the truncation
        std::vector<ftl::data::Row> rows;
        if (!(mode & 64))
            rows = ftl::data::unpacked_rows(examples, max_seq_len,
                                            variant & 1 ? ftl::data::Truncation::kKeepEnd : ftl::data::Truncation::kKeepStart,
                                            "fuzz [train]");
        else if (variant == 0)
            rows = ftl::data::pack_examples(examples, max_seq_len);
        else
            rows = ftl::data::pack_best_fit(examples, max_seq_len,
                                            variant == 1 ? ftl::data::Overflow::kTruncate : ftl::data::Overflow::kSplit,
                                            static_cast<int64_t>(records.size()), 1 + max_seq_len % 3);
        const bool pretokenized = records.front().contains("input_ids");
        check_rows(rows, max_seq_len, pretokenized ? int64_t{INT32_MAX} + 1 : tokenizer.size());
    } catch (const ftl::Error&) {
    }
    std::filesystem::remove(path);
    return 0;
}
