// Parquet files and Arrow IPC streams (the HF hub's and the datasets cache's formats) read as
// JSON records, through Arrow/Parquet C++ from the pyarrow wheel. Columns of strings, numbers,
// booleans, lists and structs (e.g. `messages`: list<struct<role, content>>) are converted.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ftl::data {

// Whether this build links Arrow (found in the pyarrow wheel at configure time).
bool arrow_available();

// Appends one JSON object per row. Throws ftl::Error naming the file for unreadable files or
// column types that have no JSON form here.
void read_parquet(const std::string& path, std::vector<nlohmann::ordered_json>& out);
void read_arrow_stream(const std::string& path, std::vector<nlohmann::ordered_json>& out);

// The value of `key` in a Parquet file's key-value metadata (the hub's exports keep the datasets
// features under "huggingface"); nullopt when absent, unreadable, or without Arrow.
std::optional<std::string> parquet_schema_metadata(const std::string& path, const std::string& key);

}  // namespace ftl::data
