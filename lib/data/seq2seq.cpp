#include "data/seq2seq.h"

#include <algorithm>
#include <filesystem>

#include "data/arrow_reader.h"
#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ftl::data {
namespace fs = std::filesystem;
namespace {

// features.<column>.names of a datasets features object ({column: {"_type": "ClassLabel",
// "names": [...]}}), '_' read as ' ' as the example does; empty when the column has none.
std::vector<std::string> names_in_features(const nlohmann::ordered_json& features, const std::string& column) {
    std::vector<std::string> names;
    if (!features.is_object() || !features.contains(column)) return names;
    const nlohmann::ordered_json& feature = features[column];
    if (!feature.is_object() || !feature.contains("names") || !feature["names"].is_array()) return names;
    for (const auto& name : feature["names"]) {
        if (!name.is_string()) return {};
        std::string text = name.get<std::string>();
        std::replace(text.begin(), text.end(), '_', ' ');
        names.push_back(text);
    }
    return names;
}

// dataset_info.json holds one info ({"features": ...}); dataset_infos.json one per config.
std::vector<std::string> names_in_info_file(const std::string& path, const std::string& column) {
    const auto text = read_text_file(path);
    if (!text) return {};
    const auto doc = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (!doc.is_object()) return {};
    if (doc.contains("features")) return names_in_features(doc["features"], column);
    for (const auto& [config, info] : doc.items())
        if (info.is_object() && info.contains("features")) {
            auto names = names_in_features(info["features"], column);
            if (!names.empty()) return names;
        }
    return {};
}

std::string describe(const nlohmann::ordered_json& value) {
    const std::string text = value.dump();
    return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

}  // namespace

std::vector<std::string> class_names(const std::string& dataset_dir, const std::string& column) {
    if (!fs::is_directory(dataset_dir)) return {};
    std::vector<std::string> info_files, parquet_files;
    for (const auto& entry : fs::recursive_directory_iterator(dataset_dir)) {
        if (!entry.is_regular_file()) continue;
        const std::string name = entry.path().filename().string();
        if (name == "dataset_info.json" || name == "dataset_infos.json") info_files.push_back(entry.path().string());
        else if (entry.path().extension() == ".parquet") parquet_files.push_back(entry.path().string());
    }
    std::sort(info_files.begin(), info_files.end());
    std::sort(parquet_files.begin(), parquet_files.end());
    for (const auto& path : info_files) {
        auto names = names_in_info_file(path, column);
        if (!names.empty()) return names;
    }
    for (const auto& path : parquet_files) {
        const auto metadata = parquet_schema_metadata(path, "huggingface");
        if (!metadata) continue;
        const auto doc = nlohmann::ordered_json::parse(*metadata, nullptr, false);
        if (doc.is_object() && doc.contains("info") && doc["info"].is_object() && doc["info"].contains("features")) {
            auto names = names_in_features(doc["info"]["features"], column);
            if (!names.empty()) return names;
        }
    }
    return {};
}

std::vector<Seq2SeqText> seq2seq_texts(const std::vector<nlohmann::ordered_json>& records, const std::string& text_column,
                                       const std::string& label_column, const std::vector<std::string>& classes,
                                       const std::string& where) {
    if (records.empty()) fail(ErrorKind::kConfig, where + ": no records");
    std::vector<Seq2SeqText> out;
    out.reserve(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
        const nlohmann::ordered_json& record = records[i];
        const std::string at = where + " record " + std::to_string(i);
        for (const std::string& column : {text_column, label_column})
            if (!record.contains(column)) {
                std::vector<std::string> have;
                for (const auto& [key, value] : record.items()) have.push_back("'" + key + "'");
                fail(ErrorKind::kConfig, at + ": no column '" + column + "' (it has " + join(have, ", ") +
                                             "; choose with --text_column and --label_column)");
            }
        const nlohmann::ordered_json& text = record[text_column];
        const nlohmann::ordered_json& label = record[label_column];
        if (!text.is_string())
            fail(ErrorKind::kConfig, at + ": --text_column '" + text_column + "' holds " + describe(text) + ", not text");
        Seq2SeqText pair{text.get<std::string>(), ""};
        if (label.is_string()) {
            pair.target = label.get<std::string>();
        } else if (label.is_number_integer()) {
            const int64_t index = label.get<int64_t>();
            if (classes.empty())
                fail(ErrorKind::kConfig, at + ": --label_column '" + label_column + "' holds the integer " +
                                             std::to_string(index) +
                                             " but the dataset declares no class names for it (a dataset_info.json "
                                             "with features." + label_column + ".names, or text labels)");
            if (index < 0 || index >= static_cast<int64_t>(classes.size()))
                fail(ErrorKind::kConfig, at + ": --label_column '" + label_column + "' holds " + std::to_string(index) +
                                             ", outside the " + std::to_string(classes.size()) + " class names (0.." +
                                             std::to_string(classes.size() - 1) + ": '" + join(classes, "', '") + "')");
            pair.target = classes[static_cast<size_t>(index)];
        } else {
            fail(ErrorKind::kConfig, at + ": --label_column '" + label_column + "' holds " + describe(label) +
                                         "; expected text or a class index");
        }
        out.push_back(std::move(pair));
    }
    return out;
}

namespace {

// tokenizer(text, max_length=limit, truncation=True): the content cut from the right so that it
// and the special tokens fit in `limit`.
std::vector<int32_t> encode_truncated(const tokenizer::HfTokenizer& tokenizer, const std::string& text, int64_t limit,
                                      bool& truncated) {
    std::vector<int32_t> full = tokenizer.encode(text, true);
    truncated = static_cast<int64_t>(full.size()) > limit;
    if (!truncated) return full;
    const std::vector<int32_t> content = tokenizer.encode(text, false);
    const size_t specials = full.size() - content.size();
    if (static_cast<int64_t>(specials) >= limit)
        fail(ErrorKind::kConfig, "a maximum length of " + std::to_string(limit) + " tokens leaves no room beside the " +
                                     std::to_string(specials) + " special tokens the tokenizer adds");
    size_t before = 0;  // specials ahead of the content (full = before + content + after)
    while (before <= specials && !std::equal(content.begin(), content.end(), full.begin() + static_cast<std::ptrdiff_t>(before)))
        ++before;
    if (before > specials) fail(ErrorKind::kInternal, "encode_truncated: the content is not inside the encoding");
    std::vector<int32_t> out(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(before));
    out.insert(out.end(), content.begin(), content.begin() + (limit - static_cast<int64_t>(specials)));
    out.insert(out.end(), full.begin() + static_cast<std::ptrdiff_t>(before + content.size()), full.end());
    return out;
}

}  // namespace

int64_t longest_target(const std::vector<std::string>& targets, const tokenizer::HfTokenizer& tokenizer) {
    int64_t longest = 0;
    for (const auto& t : targets) longest = std::max<int64_t>(longest, static_cast<int64_t>(tokenizer.encode(t, true).size()));
    return longest;
}

Seq2SeqRows tokenize_seq2seq(const std::vector<Seq2SeqText>& texts, const tokenizer::HfTokenizer& tokenizer,
                             const Seq2SeqLengths& lengths, int32_t pad_id) {
    if (lengths.max_source < 1 || lengths.max_target < 1)
        fail(ErrorKind::kConfig, "maximum source and target lengths must be at least 1 token (got " +
                                     std::to_string(lengths.max_source) + " and " + std::to_string(lengths.max_target) + ")");
    Seq2SeqRows out;
    out.rows.reserve(texts.size());
    for (const auto& text : texts) {
        bool cut_source = false, cut_target = false;
        Seq2SeqRow row{encode_truncated(tokenizer, text.source, lengths.max_source, cut_source),
                       encode_truncated(tokenizer, text.target, lengths.max_target, cut_target)};
        row.labels.resize(static_cast<size_t>(lengths.max_target), pad_id);
        std::replace(row.labels.begin(), row.labels.end(), pad_id, -100);
        out.truncated_sources += cut_source;
        out.truncated_targets += cut_target;
        out.rows.push_back(std::move(row));
    }
    return out;
}

}  // namespace ftl::data
