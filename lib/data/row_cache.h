// The tokenised-rows cache: rank 0 tokenises a split once and stores the rows under
// --output_dir; a later run with the same inputs (or another rank on the same filesystem) reads
// them back instead of tokenising again.
//
// Key: a 64-bit FNV-1a hash (hex) of the cache format, every dataset file's path, size and
// modification time, the tokenizer files' bytes and the text options, so any change in what
// tokenisation reads or does gives a new key. File: a safetensors file with `offsets` (I64,
// [rows + 1]) and `input_ids`, `labels`, `position_ids` (I32, [total tokens]).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "data/examples.h"

namespace ftl::data {

// Incremental FNV-1a (64-bit), enough to key a cache (not a cryptographic digest).
class Fingerprint {
public:
    Fingerprint& add(const std::string& text);
    Fingerprint& add_file_identity(const std::string& path);  // path, size, mtime; "missing" if absent
    Fingerprint& add_file_bytes(const std::string& path);     // contents; "missing" if absent
    std::string hex() const;

private:
    void mix(const void* data, size_t size);
    uint64_t state_ = 14695981039346656037ull;
};

// Writes `rows` atomically to `path` (its folder is created).
void write_row_cache(const std::string& path, const std::vector<Row>& rows, const std::string& key);

// The rows stored at `path` under `key`; nullopt when the file is absent. A file that is
// unreadable, of another key or inconsistent throws ftl::Error(kIo) naming it.
std::optional<std::vector<Row>> read_row_cache(const std::string& path, const std::string& key);

}  // namespace ftl::data
