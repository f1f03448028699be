// Small string helpers shared by the config parsers and the CLI: splitting, case folding,
// HF-style boolean parsing and "did you mean" suggestions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ftl {

std::string trim(std::string_view s);
std::string to_lower(std::string_view s);
std::vector<std::string> split(std::string_view s, char sep);  // keeps empty pieces
std::string join(const std::vector<std::string>& parts, std::string_view sep);
bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);

// Booleans as HfArgumentParser's string_to_bool reads them: yes/no, true/false, t/f, y/n, 1/0,
// any case. Anything else is nullopt.
std::optional<bool> parse_bool(std::string_view s);

// Parse a whole string as a number; nullopt on trailing garbage, empty input or overflow.
std::optional<long long> parse_int(std::string_view s);
std::optional<double> parse_double(std::string_view s);
// A size as transformers' convert_file_size_to_int reads it: "5GB" = 5·10^9, "500MiB" = 500·2^20,
// "100KB", or plain bytes. nullopt unless positive and well formed.
std::optional<int64_t> parse_byte_size(std::string_view s);

// UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
// Length in bytes of the valid sequence starting at s[i], or 0 when none starts there.
size_t valid_utf8_sequence(std::string_view s, size_t i);
// Byte offset of the first byte that does not start a valid sequence; nullopt for valid UTF-8.
std::optional<size_t> first_invalid_utf8(std::string_view s);

// Levenshtein edit distance (insert, delete, substitute each cost 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` by edit distance, if it is close enough to be a plausible
// typo (distance <= max(2, |word|/3)); nullopt otherwise.
std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" or "" — appended to unknown-name messages.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace ftl
