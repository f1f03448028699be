// Typed reads of a config.json object: each names the file and key, the rule
// broken and the value found (or "(missing)") in its error.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "util/error.h"

namespace ftl::model {

class ConfigReader {
public:
    ConfigReader(const nlohmann::json& object, std::string source) : j_(object), source_(std::move(source)) {}

    [[noreturn]] void bad(const std::string& key, const std::string& rule) const {
        auto it = j_.find(key);
        fail(ErrorKind::kConfig, source_ + ": " + key + ": " + rule +
                                     (it == j_.end() ? std::string(" (missing)") : " (got " + it->dump() + ")"));
    }
    bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

    int64_t integer(const std::string& key, std::optional<int64_t> fallback = std::nullopt, int64_t min = 1) const {
        if (!has(key)) {
            if (fallback) return *fallback;
            bad(key, "required integer");
        }
        const nlohmann::json& v = j_.at(key);
        if (!v.is_number_integer()) bad(key, "must be an integer");
        int64_t x = v.get<int64_t>();
        if (x < min) bad(key, "must be >= " + std::to_string(min));
        return x;
    }
    double number(const std::string& key, double fallback) const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_number()) bad(key, "must be a number");
        return j_.at(key).get<double>();
    }
    bool boolean(const std::string& key, bool fallback) const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_boolean()) bad(key, "must be true or false");
        return j_.at(key).get<bool>();
    }
    std::string text(const std::string& key, const std::string& fallback) const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_string()) bad(key, "must be a string");
        return j_.at(key).get<std::string>();
    }
    std::optional<int64_t> token_id(const std::string& key) const {
        if (!has(key)) return std::nullopt;
        const nlohmann::json& v = j_.at(key);
        if (v.is_number_integer()) return v.get<int64_t>();
        if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
        bad(key, "must be a token id or a list of them");
    }

private:
    const nlohmann::json& j_;
    std::string source_;
};

// `text` (the contents of `source`) parsed as a JSON object; anything else is Error(kConfig)
// naming `source`.
inline nlohmann::json parse_json_object(const std::string& text, const std::string& source) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        fail(ErrorKind::kConfig, source + ": not valid JSON: " + e.what());
    }
    if (!j.is_object()) fail(ErrorKind::kConfig, source + ": expected a JSON object");
    return j;
}

}  // namespace ftl::model
