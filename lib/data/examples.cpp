#include "data/examples.h"

#include "util/error.h"
#include "util/strings.h"

namespace ftl::data {
namespace {

std::string text_of(const nlohmann::json& record, const TextOptions& options, const tokenizer::HfTokenizer& tok,
                    const std::string& where) {
    if (options.chat_format && record.contains("messages") && record["messages"].is_array()) {
        std::vector<tokenizer::ChatMessage> messages;
        for (const auto& m : record["messages"]) {
            if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
                !m["content"].is_string())
                fail(ErrorKind::kConfig, where + ": messages entries need string 'role' and 'content'");
            messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
        }
        return tokenizer::render_chat(*options.chat_format, messages, tok.eos_token().value_or(""));
    }
    auto it = record.find(options.text_field);
    if (it == record.end() || !it->is_string()) {
        std::vector<std::string> columns;
        for (auto c = record.begin(); c != record.end(); ++c) columns.push_back(c.key());
        fail(ErrorKind::kConfig, where + ": --dataset_text_field '" + options.text_field +
                                     "' is not a text column (the records have: " + join(columns, ", ") + ")" +
                                     (record.contains("messages") && !options.chat_format
                                          ? "; for a `messages` column pass --chat_template_format chatml|zephyr"
                                          : did_you_mean(options.text_field, columns)));
    }
    return it->get<std::string>();
}

}  // namespace

std::vector<std::vector<int32_t>> tokenize_records(const std::vector<nlohmann::json>& records,
                                                   const tokenizer::HfTokenizer& tokenizer, const TextOptions& options,
                                                   const std::string& source) {
    if (records.empty()) fail(ErrorKind::kConfig, source + ": the dataset split is empty");
    const auto eos = tokenizer.eos_id();
    if (options.append_concat_token && !eos)
        fail(ErrorKind::kConfig, "--append_concat_token: the tokenizer has no eos_token to append");
    std::vector<std::vector<int32_t>> out;
    out.reserve(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
        const std::string text = text_of(records[i], options, tokenizer, source + " record " + std::to_string(i));
        auto ids = tokenizer.encode(text, options.add_special_tokens);
        if (options.append_concat_token) ids.push_back(*eos);
        if (!ids.empty()) out.push_back(std::move(ids));
    }
    if (out.empty()) fail(ErrorKind::kConfig, source + ": every record tokenized to nothing");
    return out;
}

std::vector<Row> pack_examples(const std::vector<std::vector<int32_t>>& examples, int64_t max_seq_len) {
    std::vector<Row> rows(1);
    for (const auto& ids : examples) {
        int32_t position = 0;
        for (size_t i = 0; i < ids.size(); ++i) {
            if (static_cast<int64_t>(rows.back().input_ids.size()) == max_seq_len) {
                rows.emplace_back();
                position = 0;  // a document continued on a new row restarts its positions
            }
            Row& row = rows.back();
            row.input_ids.push_back(ids[i]);
            row.labels.push_back(position == 0 ? -100 : ids[i]);
            row.position_ids.push_back(position++);
        }
    }
    return rows;
}

std::vector<Row> unpacked_rows(const std::vector<std::vector<int32_t>>& examples, int64_t max_seq_len,
                               const std::string& source) {
    std::vector<Row> rows;
    for (size_t i = 0; i < examples.size(); ++i) {
        const auto& ids = examples[i];
        if (static_cast<int64_t>(ids.size()) > max_seq_len)
            fail(ErrorKind::kConfig, source + " record " + std::to_string(i) + ": " + std::to_string(ids.size()) +
                                         " tokens exceed --max_seq_len " + std::to_string(max_seq_len) +
                                         " (raise --max_seq_len, or pass --packing True to split documents across rows)");
        Row row;
        row.input_ids = ids;
        row.labels = ids;
        for (size_t p = 0; p < ids.size(); ++p) row.position_ids.push_back(static_cast<int32_t>(p));
        rows.push_back(std::move(row));
    }
    return rows;
}

}  // namespace ftl::data
