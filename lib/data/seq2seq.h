// Records -> source/target rows for an encoder-decoder model, as peft's BART example
// (peft_lora_seq2seq_accelerate_ds_zero3_offload.py) prepares RAFT's twitter_complaints:
//   target text = the label column's value, or, when it holds integers, the dataset's class name
//                 for it (ClassLabel names, '_' read as ' ');
//   source ids  = tokenizer(text, truncation=True): special tokens added, at most max_source
//                 tokens in all (the tokenizer's model_max_length by default);
//   labels      = tokenizer(target, max_length=max_target, padding="max_length", truncation=True)
//                 with padding replaced by -100, so every row's labels have max_target entries.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/hf_tokenizer.h"

namespace ftl::data {

// The class names of `column` as the dataset declares them (a datasets ClassLabel): from a
// dataset_info.json in `dataset_dir` or below it (what datasets' save_to_disk and the hub's
// exports write: features.<column>.names), else from a Parquet file's "huggingface" schema
// metadata. Empty when nothing declares them.
std::vector<std::string> class_names(const std::string& dataset_dir, const std::string& column);

struct Seq2SeqText {
    std::string source, target;
};

// The source text and target text of each record. A missing column, an integer label outside
// `classes` (or without class names), or a value that is neither text nor an integer is
// ftl::Error(kConfig) naming `where`, the record and what would be right.
std::vector<Seq2SeqText> seq2seq_texts(const std::vector<nlohmann::ordered_json>& records, const std::string& text_column,
                                       const std::string& label_column, const std::vector<std::string>& classes,
                                       const std::string& where);

struct Seq2SeqRow {
    std::vector<int32_t> input_ids;  // source, special tokens included
    std::vector<int32_t> labels;     // target, max_target entries, -100 after the target
};

struct Seq2SeqLengths {
    int64_t max_source = 1024;
    int64_t max_target = 0;
};

// The longest target in tokens (special tokens included): the example's target_max_length over
// its class names.
int64_t longest_target(const std::vector<std::string>& targets, const tokenizer::HfTokenizer& tokenizer);

struct Seq2SeqRows {
    std::vector<Seq2SeqRow> rows;
    int64_t truncated_sources = 0, truncated_targets = 0;  // rows cut to fit, for a warning
};

// Tokenizes every text pair; `pad_id` is the tokenizer's padding id (its label positions -100).
Seq2SeqRows tokenize_seq2seq(const std::vector<Seq2SeqText>& texts, const tokenizer::HfTokenizer& tokenizer,
                             const Seq2SeqLengths& lengths, int32_t pad_id);

}  // namespace ftl::data
