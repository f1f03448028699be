// Reading a whole file into memory, for the JSON/YAML/text files the parsers take as strings.
#pragma once

#include <optional>
#include <string>

namespace ftl {

// The file's bytes; nullopt when it cannot be opened (callers name the file and the fix).
std::optional<std::string> read_text_file(const std::string& path);

}  // namespace ftl
