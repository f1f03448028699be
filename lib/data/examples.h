// From records to training rows, as the seed's train.py + TRL's SFTTrainer prepare them:
// text (the --dataset_text_field, a `messages` conversation rendered in the chat format, or a
// `prompt` and its `completion` as TRL tokenizes them), tokenized with --add_special_tokens,
// --append_concat_token adding EOS; then either packed or one row per example.
//
// Packing follows TRL's "wrapped" strategy: all token streams concatenated and cut into rows of
// max_seq_len (the last row shorter), so rows = ceil(total tokens / max_seq_len); unlike TRL's
// plain wrapping, each document keeps its own positions (restarting at 0, also where a document
// continues on the next row) and attends only to itself, and its first token is not a target.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <memory>

#include "tokenizer/chat_renderer.h"
#include "tokenizer/hf_tokenizer.h"

namespace ftl::data {

struct TextOptions {
    std::string text_field = "text";
    std::shared_ptr<const tokenizer::ChatRenderer> chat;  // renders conversations (`messages`, prompt-completion lists)
    bool add_special_tokens = false;
    bool append_concat_token = false;
    // TRL's assistant_only_loss: only what assistants wrote (content + end marker) is a target.
    // Needs conversations; the ids are those of the whole rendered text (checked).
    bool assistant_only_loss = false;
    // TRL's completion_only_loss: in prompt-completion records (and pre-tokenized ones with a
    // `completion_mask`) only the completion's tokens are targets.
    bool completion_only_loss = true;
};

// One tokenized record: ids and, when only some tokens are targets, a 0/1 mask per token.
struct Example {
    std::vector<int32_t> ids;
    std::vector<uint8_t> is_target;  // empty: every token is a target
    int64_t record = 0;              // the record's index in its split (TRL packs 1000 records at a time)
};

// One tokenized example per record. When the first record is a ShareGPT-style conversation
// (`conversations` of {"from", "value"}), every record is converted as TRL converts them ("from"
// -> "role", "value" -> "content", `conversations` -> `messages`). A dataset whose first record
// has `input_ids` is taken as pre-tokenized, as TRL does: its ids are used as they are (no text
// field, chat format, special tokens or concat token), targets from `labels` or
// `assistant_masks` when present. `source` names the dataset/split in errors (missing text field
// naming the columns the records have; empty dataset).
std::vector<Example> tokenize_records(const std::vector<nlohmann::ordered_json>& records,
                                      const tokenizer::HfTokenizer& tokenizer, const TextOptions& options,
                                      const std::string& source);

// Whether token i of `example` is a target (before the shift).
bool is_target(const Example& example, size_t i);

// A training row: ids, next-token targets before the shift (-100 = not a target) and positions.
struct Row {
    std::vector<int32_t> input_ids;
    std::vector<int32_t> labels;
    std::vector<int32_t> position_ids;
};

// Packing's "wrapped" strategy (above): rows of max_seq_len, the last one shorter.
std::vector<Row> pack_examples(const std::vector<Example>& examples, int64_t max_seq_len);

// Which end of an example longer than max_seq_len a row keeps (SFTConfig's truncation_mode).
enum class Truncation { kKeepStart, kKeepEnd };

// One row per example, without packing, as TRL's SFTTrainer prepares them: an example longer than
// max_seq_len is cut to its first (kKeepStart) or last max_seq_len tokens, then a row without any
// target token is left out (it adds no loss). `source` names the split when no row is left.
std::vector<Row> unpacked_rows(const std::vector<Example>& examples, int64_t max_seq_len, Truncation truncation,
                               const std::string& source);

}  // namespace ftl::data
