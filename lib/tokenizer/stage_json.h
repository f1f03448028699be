// Reading tokenizer.json stage objects (normalizers.cpp, pre_tokenizers.cpp, pipeline.cpp):
// typed fields whose errors name the JSON path, and the pieces several stages share. Internal
// to the tokenizer module.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/text.h"

namespace ftl::tokenizer::stage {

using nlohmann::json;

[[noreturn]] void bad(const std::string& where, const std::string& rule);
[[noreturn]] void unsupported(const std::string& where, const std::string& type, const char* supported);
std::string type_of(const json& j, const std::string& where);
std::string text_field(const json& j, const char* key, const std::string& where,
                       std::optional<std::string> fallback = std::nullopt);
bool bool_field(const json& j, const char* key, bool fallback, const std::string& where);
size_t count_field(const json& j, const char* key, const std::string& where);

// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
class Pattern {
public:
    Pattern(const json& j, const std::string& where);
    // Non-overlapping [begin, end) byte ranges, left to right.
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

private:
    std::string literal_;
    std::unique_ptr<Regex> regex_;
};

// Metaspace's prepend_scheme (pre-tokenizer and decoder).
enum class PrependScheme { kAlways, kFirst, kNever };
PrependScheme parse_prepend_scheme(const json& j, const std::string& where);

// Builds the steps of a Sequence stage from j[key], skipping JSON nulls.
template <typename Step, typename Make>
void add_steps(std::vector<std::unique_ptr<Step>>& steps, const json& j, const char* key, const std::string& where,
               Make make) {
    if (!j.contains(key) || !j[key].is_array()) bad(where + "." + key, "must be a list");
    for (size_t i = 0; i < j[key].size(); ++i) {
        auto step = make(j[key][i], where + "." + key + "[" + std::to_string(i) + "]");
        if (step) steps.push_back(std::move(step));
    }
}

}  // namespace ftl::tokenizer::stage
