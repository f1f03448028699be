// Datasets as the seed's train.py reads them (datasets.load_dataset on a local folder or hub
// snapshot): one or more files per split, named after the split (train.jsonl,
// train-00000-of-00001.jsonl, data/test.json, ...). Records are JSON objects.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ftl::data {

struct SplitFiles {
    std::string split;
    std::vector<std::string> files;  // sorted
};

// The split files under `dir` (recursively), keyed by split name. A file belongs to split S when
// its name is S.<ext> or starts with S- or S_ (HF's data-files patterns). Extensions read:
// .jsonl, .json, .csv (data/csv_reader.h), .parquet, .arrow (Arrow IPC stream, as the datasets
// cache writes).
std::map<std::string, SplitFiles> find_split_files(const std::string& dir);

// Every record of the split, in file order. Throws ftl::Error(kConfig) naming the dataset and the
// splits it has when `split` is missing, and file:line for malformed records.
std::vector<nlohmann::ordered_json> read_split(const std::string& dir, const std::string& split);

}  // namespace ftl::data
