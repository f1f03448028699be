// UTF-8 helpers and a PCRE2 regex wrapper for the tokenizer pipeline.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ftl::tokenizer {

// Length in bytes of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes, so a scan
// always advances).
size_t utf8_length(unsigned char lead);
// Appends the UTF-8 encoding of `code_point`.
void append_utf8(std::string& out, uint32_t code_point);
// Whether `bytes` is valid UTF-8 (RFC 3629).
bool is_valid_utf8(std::string_view bytes);
// Replaces invalid UTF-8 with U+FFFD, as Rust's String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);

// GPT-2's reversible byte <-> printable character map (bytes_to_unicode): printable Latin-1
// bytes map to themselves, the other 68 to U+0100 upwards.
struct ByteLevelAlphabet {
    std::string byte_to_text[256];  // each a 1-2 byte UTF-8 string
    ByteLevelAlphabet();
    // The byte for a code point of this alphabet, or -1.
    int byte_of(uint32_t code_point) const;
};

// A compiled PCRE2 pattern with Unicode properties (\p{L}, \s as Unicode whitespace): the
// semantics of the Oniguruma patterns in tokenizer.json files.
class Regex {
public:
    // Throws ftl::Error(kConfig) naming `where` and PCRE2's message when the pattern is invalid.
    Regex(const std::string& pattern, const std::string& where);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Non-overlapping matches left to right, as [begin, end) byte offsets. Empty matches are
    // skipped (the scan then advances one character).
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ftl::tokenizer
