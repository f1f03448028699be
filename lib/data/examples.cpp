#include "data/examples.h"

#include <algorithm>
#include <cstdint>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::data {
namespace {

// The record's text as consecutive segments (one unless --assistant_only_loss cuts a conversation
// at its assistant turns), each marked target or not.
std::vector<tokenizer::ChatSegment> segments_of(const nlohmann::ordered_json& record, const TextOptions& options,
                                                const tokenizer::HfTokenizer& tok, const std::string& where) {
    if (options.chat && record.contains("messages") && record["messages"].is_array())
        return options.chat->render(record["messages"], record, tok, false, options.assistant_only_loss, where);
    if (options.assistant_only_loss)
        fail(ErrorKind::kConfig, where + ": --assistant_only_loss True needs conversations (a `messages` column)");
    auto it = record.find(options.text_field);
    if (it == record.end() || !it->is_string()) {
        std::vector<std::string> columns;
        for (auto c = record.begin(); c != record.end(); ++c) columns.push_back(c.key());
        fail(ErrorKind::kConfig, where + ": --dataset_text_field '" + options.text_field +
                                     "' is not a text column (the records have: " + join(columns, ", ") + ")" +
                                     did_you_mean(options.text_field, columns));
    }
    return {{it->get<std::string>(), true}};
}

// Whether the record's ids get the post-processor's special tokens: --add_special_tokens for
// text, and for conversations in chatml/zephyr (train.py renders them to text first); never for
// the tokenizer's own template, whose text already has them (TRL's apply_chat_template).
bool adds_special_tokens(const nlohmann::ordered_json& record, const TextOptions& options) {
    const bool conversation = record.contains("messages") ? record["messages"].is_array()
                                                          : record.contains("prompt") && record["prompt"].is_array();
    return options.add_special_tokens && !(conversation && options.chat && !options.chat->is_native());
}

// Tokenizes the joined text; with several segments, a token is a target when its characters
// overlap an assistant segment: transformers' return_assistant_tokens_mask over the tokenizer's
// offsets, so a token that straddles a boundary (a merge across it) is a target.
Example encode(const std::vector<tokenizer::ChatSegment>& segments, const tokenizer::HfTokenizer& tok,
               bool add_special_tokens) {
    std::string text;
    std::vector<std::pair<size_t, size_t>> targets;  // byte ranges of the assistant segments
    for (const auto& segment : segments) {
        if (segment.assistant) targets.emplace_back(text.size(), text.size() + segment.text.size());
        text += segment.text;
    }
    if (segments.size() == 1 && segments[0].assistant) return {tok.encode(text, add_special_tokens), {}};
    const tokenizer::Encoding encoding = tok.encode_with_offsets(text, add_special_tokens);
    Example example{encoding.ids, std::vector<uint8_t>(encoding.ids.size(), 0)};
    size_t next = 0;  // the first target range not wholly before the token
    for (size_t t = 0; t < encoding.ids.size(); ++t) {
        const auto [begin, end] = encoding.offsets[t];
        while (next < targets.size() && begin >= targets[next].second) ++next;
        if (next == targets.size()) break;
        if (end > targets[next].first) example.is_target[t] = 1;
    }
    return example;
}

// `v` as an integer when it is one in [-100, INT32_MAX] (ids, labels and masks all fit).
std::optional<int64_t> small_integer(const nlohmann::ordered_json& v) {
    if (v.is_number_unsigned()) {
        if (v.get<uint64_t>() > INT32_MAX) return std::nullopt;
        return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (!v.is_number_integer() || v.get<int64_t>() < -100 || v.get<int64_t>() > INT32_MAX) return std::nullopt;
    return v.get<int64_t>();
}

// A record of a pre-tokenized dataset (TRL's "processed" datasets: an `input_ids` column, so
// nothing is rendered or tokenized). Its targets come from `labels` (-100 = not a target), else
// from `completion_mask` and `assistant_masks` (0 = not a target), else every token is one.
Example pretokenized_example(const nlohmann::ordered_json& record, const TextOptions& options, const std::string& where) {
    auto ids_it = record.find("input_ids");
    if (ids_it == record.end() || !ids_it->is_array())
        fail(ErrorKind::kConfig, where + ": the dataset is pre-tokenized (its first record has `input_ids`), but this "
                                         "record has no `input_ids` list");
    Example example;
    for (const auto& id : *ids_it) {
        const auto value = small_integer(id);
        if (!value || *value < 0)
            fail(ErrorKind::kConfig, where + ": input_ids holds " + id.dump() + "; token ids are integers from 0");
        example.ids.push_back(static_cast<int32_t>(*value));
    }
    // The columns that mark targets: `labels` when present, else TRL's mask columns, each of which
    // must mark a token (completion_mask only under --completion_only_loss).
    std::vector<std::string> columns;
    if (record.contains("labels")) {
        columns = {"labels"};
    } else {
        if (options.completion_only_loss && record.contains("completion_mask")) columns.push_back("completion_mask");
        if (record.contains("assistant_masks")) columns.push_back("assistant_masks");
    }
    if (options.assistant_only_loss && !record.contains("labels") && !record.contains("assistant_masks"))
        fail(ErrorKind::kConfig, where + ": --assistant_only_loss True: the pre-tokenized dataset has neither "
                                         "`assistant_masks` nor `labels` to say which tokens the assistant wrote");
    if (columns.empty()) return example;
    example.is_target.assign(example.ids.size(), 1);
    for (const std::string& name : columns) {
        const auto& column = record[name];
        if (!column.is_array() || column.size() != example.ids.size())
            fail(ErrorKind::kConfig, where + ": `" + name + "` must be a list as long as input_ids (" +
                                         std::to_string(example.ids.size()) + " tokens)");
        const bool is_labels = name == "labels";
        for (size_t i = 0; i < column.size(); ++i) {
            const auto value = small_integer(column[i]);
            const bool valid = value && (is_labels ? *value == -100 || *value == example.ids[i] : *value == 0 || *value == 1);
            if (!valid)
                fail(ErrorKind::kConfig, where + ": `" + name + "`[" + std::to_string(i) + "] is " + column[i].dump() +
                                             (is_labels ? "; a label is -100 or the input id at its position (" +
                                                              std::to_string(example.ids[i]) + ": the shift is done in training)"
                                                        : "; " + name + " holds 0 or 1"));
            if (is_labels ? *value == -100 : *value == 0) example.is_target[i] = 0;
        }
    }
    return example;
}

// TRL's prompt-completion records (SFTTrainer, TRL 1.16). Text: unless the record also has the
// text field, the completion gets the EOS text when it does not end with it. Conversations
// (lists of messages, in --chat_template_format): the prompt rendered with the generation prompt,
// prompt + completion as one conversation (assistant content marked under --assistant_only_loss).
// The two are tokenized apart and the completion starts where their ids diverge (a merge across
// the boundary moves it into the prompt's last tokens); under --completion_only_loss (TRL's
// default for such records) only completion tokens are targets.
Example prompt_completion_example(const nlohmann::ordered_json& record, const tokenizer::HfTokenizer& tok,
                                  const TextOptions& options, const std::string& where) {
    const auto& prompt = record["prompt"];
    const auto& completion = record["completion"];
    const std::string eos = tok.eos_token().value_or("");
    std::vector<int32_t> prompt_ids;
    Example example;
    if (prompt.is_array() && completion.is_array()) {
        if (!options.chat) fail(ErrorKind::kInternal, where + ": conversations without a chat renderer");
        const bool specials = adds_special_tokens(record, options);
        prompt_ids = encode(options.chat->render(prompt, record, tok, true, false, where), tok, specials).ids;
        nlohmann::ordered_json messages = prompt;
        for (const auto& m : completion) messages.push_back(m);
        example = encode(options.chat->render(messages, record, tok, false, options.assistant_only_loss, where), tok,
                         specials);
    } else {
        if (!prompt.is_string() || !completion.is_string())
            fail(ErrorKind::kConfig, where + ": `prompt` and `completion` must both be text or both be lists of messages");
        if (options.assistant_only_loss)
            fail(ErrorKind::kConfig, where + ": --assistant_only_loss True needs conversations; for text "
                                             "prompt-completion records --completion_only_loss marks the targets");
        std::string completion_text = completion.get<std::string>();
        if (!record.contains(options.text_field) && !eos.empty() && !ends_with(completion_text, eos)) completion_text += eos;
        prompt_ids = tok.encode(prompt.get<std::string>(), options.add_special_tokens);
        example.ids = tok.encode(prompt.get<std::string>() + completion_text, options.add_special_tokens);
    }
    size_t prompt_length = 0;
    while (prompt_length < std::min(prompt_ids.size(), example.ids.size()) &&
           prompt_ids[prompt_length] == example.ids[prompt_length])
        ++prompt_length;
    if (options.completion_only_loss) {
        if (example.is_target.empty()) example.is_target.assign(example.ids.size(), 1);
        std::fill_n(example.is_target.begin(), static_cast<long>(prompt_length), 0);
    }
    return example;
}

// TRL's is_conversational_from_value: a `conversations` list whose first entry is an object with
// "from" and "value" (the ShareGPT layout).
bool is_conversational_from_value(const nlohmann::ordered_json& record) {
    const auto it = record.find("conversations");
    return it != record.end() && it->is_array() && !it->empty() && (*it)[0].is_object() &&
           (*it)[0].contains("from") && (*it)[0].contains("value");
}

// TRL's maybe_convert_to_chatml: in every list of messages, "from" becomes "role" and "value"
// "content" (moved to the end, as Python's pop and insert move them; roles are not renamed), and
// `conversations` becomes `messages`.
nlohmann::ordered_json converted_to_chatml(nlohmann::ordered_json record) {
    for (const char* key : {"prompt", "completion", "chosen", "rejected", "messages", "conversations"}) {
        auto it = record.find(key);
        if (it == record.end() || !it->is_array()) continue;
        for (auto& message : *it) {
            if (!message.is_object()) continue;
            for (const auto& [from, to] : {std::pair{"from", "role"}, std::pair{"value", "content"}}) {
                if (!message.contains(from)) continue;
                nlohmann::ordered_json value = std::move(message[from]);
                message.erase(from);
                message.erase(to);
                message[to] = std::move(value);
            }
        }
    }
    if (record.contains("conversations")) {
        nlohmann::ordered_json messages = std::move(record["conversations"]);
        record.erase("conversations");
        record.erase("messages");
        record["messages"] = std::move(messages);
    }
    return record;
}

}  // namespace

std::vector<Example> tokenize_records(const std::vector<nlohmann::ordered_json>& records,
                                      const tokenizer::HfTokenizer& tokenizer, const TextOptions& options,
                                      const std::string& source) {
    if (records.empty()) fail(ErrorKind::kConfig, source + ": the dataset split is empty");
    const auto eos = tokenizer.eos_id();
    if (options.append_concat_token && !eos)
        fail(ErrorKind::kConfig, "--append_concat_token: the tokenizer has no eos_token to append");
    std::vector<Example> out;
    out.reserve(records.size());
    if (records.front().contains("input_ids")) {
        for (size_t i = 0; i < records.size(); ++i) {
            Example example = pretokenized_example(records[i], options, source + " record " + std::to_string(i));
            example.record = static_cast<int64_t>(i);
            if (!example.ids.empty()) out.push_back(std::move(example));
        }
        if (out.empty()) fail(ErrorKind::kConfig, source + ": every record's input_ids is empty");
        return out;
    }
    const bool from_value = is_conversational_from_value(records.front());
    for (size_t i = 0; i < records.size(); ++i) {
        const std::string where = source + " record " + std::to_string(i);
        const nlohmann::ordered_json record = from_value ? converted_to_chatml(records[i]) : records[i];
        Example example = record.contains("prompt") && record.contains("completion")
                              ? prompt_completion_example(record, tokenizer, options, where)
                              : encode(segments_of(record, options, tokenizer, where), tokenizer,
                                       adds_special_tokens(record, options));
        if (options.append_concat_token) {
            example.ids.push_back(*eos);
            if (!example.is_target.empty()) example.is_target.push_back(0);
        }
        example.record = static_cast<int64_t>(i);
        if (!example.ids.empty()) out.push_back(std::move(example));
    }
    if (out.empty()) fail(ErrorKind::kConfig, source + ": every record tokenized to nothing");
    return out;
}

bool is_target(const Example& example, size_t i) { return example.is_target.empty() || example.is_target[i] != 0; }

std::vector<Row> pack_examples(const std::vector<Example>& examples, int64_t max_seq_len) {
    std::vector<Row> rows(1);
    for (const auto& example : examples) {
        const auto& ids = example.ids;
        int32_t position = 0;
        for (size_t i = 0; i < ids.size(); ++i) {
            if (static_cast<int64_t>(rows.back().input_ids.size()) == max_seq_len) {
                rows.emplace_back();
                position = 0;  // a document continued on a new row restarts its positions
            }
            Row& row = rows.back();
            row.input_ids.push_back(ids[i]);
            row.labels.push_back(position == 0 || !is_target(example, i) ? -100 : ids[i]);
            row.position_ids.push_back(position++);
        }
    }
    return rows;
}

std::vector<Row> unpacked_rows(const std::vector<Example>& examples, int64_t max_seq_len, Truncation truncation,
                               const std::string& source) {
    std::vector<Row> rows;
    for (const Example& example : examples) {
        const int64_t length = static_cast<int64_t>(example.ids.size());
        const int64_t kept = std::min(length, max_seq_len);
        const int64_t first = truncation == Truncation::kKeepEnd ? length - kept : 0;
        Row row;
        bool has_target = false;
        for (int64_t p = first; p < first + kept; ++p) {
            const size_t i = static_cast<size_t>(p);
            const bool target = is_target(example, i);
            has_target = has_target || target;
            row.input_ids.push_back(example.ids[i]);
            row.labels.push_back(target ? example.ids[i] : -100);
            row.position_ids.push_back(static_cast<int32_t>(p - first));
        }
        if (has_target) rows.push_back(std::move(row));
    }
    if (rows.empty())
        fail(ErrorKind::kConfig, source + ": no record has a target token within its first (or, with --truncation_mode "
                                          "keep_end, last) --max_seq_len " + std::to_string(max_seq_len) + " tokens");
    return rows;
}

}  // namespace ftl::data
