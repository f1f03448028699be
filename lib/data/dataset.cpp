#include "data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "data/arrow_reader.h"
#include "data/csv_reader.h"
#include "util/files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::data {
namespace fs = std::filesystem;
namespace {

const std::vector<std::string> kKnownSplits{"train", "test", "validation", "valid", "dev", "eval"};
const std::vector<std::string> kExtensions{".jsonl", ".json", ".csv", ".parquet", ".arrow"};

std::string split_of(const std::string& filename) {
    const std::string stem = filename.substr(0, filename.find('.'));
    for (const auto& s : kKnownSplits)
        if (stem == s || starts_with(stem, s + "-") || starts_with(stem, s + "_")) return s;
    return "";
}

void read_jsonl(const std::string& path, std::vector<nlohmann::ordered_json>& out) {
    std::ifstream in(path);
    if (!in) fail(ErrorKind::kIo, path + ": cannot read");
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        if (trim(line).empty()) continue;
        auto record = nlohmann::ordered_json::parse(line, nullptr, false);
        if (record.is_discarded() || !record.is_object())
            fail(ErrorKind::kConfig, path + ":" + std::to_string(number) + ": not a JSON object");
        out.push_back(std::move(record));
    }
}

void read_json(const std::string& path, std::vector<nlohmann::ordered_json>& out) {
    const auto text = read_text_file(path);
    if (!text) fail(ErrorKind::kIo, path + ": cannot read");
    auto doc = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (doc.is_discarded()) {  // many ".json" dataset files are JSON lines
        read_jsonl(path, out);
        return;
    }
    if (doc.is_object() && doc.contains("data") && doc["data"].is_array()) doc = doc["data"];
    if (!doc.is_array()) fail(ErrorKind::kConfig, path + ": expected a list of records (or JSON lines)");
    for (auto& record : doc) {
        if (!record.is_object()) fail(ErrorKind::kConfig, path + ": every record must be a JSON object");
        out.push_back(std::move(record));
    }
}

}  // namespace

std::map<std::string, SplitFiles> find_split_files(const std::string& dir) {
    std::map<std::string, SplitFiles> splits;
    if (fs::is_regular_file(dir)) {  // a single file is the train split
        splits["train"] = {"train", {dir}};
        return splits;
    }
    if (!fs::is_directory(dir)) fail(ErrorKind::kConfig, "dataset '" + dir + "': no such file or folder");
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
        if (!entry.is_regular_file()) continue;
        const std::string name = entry.path().filename().string();
        const std::string ext = entry.path().extension().string();
        if (std::find(kExtensions.begin(), kExtensions.end(), ext) == kExtensions.end()) continue;
        const std::string split = split_of(name);
        if (split.empty()) continue;
        splits[split].split = split;
        splits[split].files.push_back(entry.path().string());
    }
    for (auto& [name, files] : splits) std::sort(files.files.begin(), files.files.end());
    return splits;
}

std::vector<nlohmann::ordered_json> read_split(const std::string& dir, const std::string& split) {
    const auto splits = find_split_files(dir);
    auto it = splits.find(split);
    if (it == splits.end()) {
        std::vector<std::string> names;
        for (const auto& [name, files] : splits) names.push_back(name);
        fail(ErrorKind::kConfig, "--splits: dataset '" + dir + "' has no split '" + split + "' (it has: " +
                                     (names.empty() ? std::string("no split files") : join(names, ", ")) +
                                     "; files are matched by name, e.g. " + split + ".jsonl)");
    }
    std::vector<nlohmann::ordered_json> records;
    for (const auto& file : it->second.files) {
        const std::string ext = fs::path(file).extension().string();
        if (ext == ".jsonl") read_jsonl(file, records);
        else if (ext == ".json") read_json(file, records);
        else if (ext == ".csv") read_csv(file, records);
        else if (ext == ".parquet") read_parquet(file, records);
        else if (ext == ".arrow") read_arrow_stream(file, records);
        else
            fail(ErrorKind::kConfig, "dataset '" + file + "': the extension '" + ext +
                                         "' is not a format ftlaunch reads (" + join(kExtensions, ", ") + ")");
    }
    return records;
}

}  // namespace ftl::data
