// Typed reads from a yaml-cpp node with messages that name the file, line, dotted key, the
// value found and the rule it broke: "configs/x.yaml:12: deepspeed_config.zero_stage: must be
// one of 0, 1, 2, 3 (got 5)". Used by the accelerate config parser; JSON files parse as YAML.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ftl::config {

class YamlReader {
public:
    explicit YamlReader(std::string source) : source_(std::move(source)) {}

    // Parses YAML text; syntax errors become ftl::Error(kConfig) with file:line:column, as does
    // text that is not UTF-8 (or holds control characters), before or after yaml-cpp's decoding.
    YAML::Node load_text(const std::string& text) const;

    std::string location(const YAML::Node& node) const;  // "file:line"
    [[noreturn]] void fail(const YAML::Node& node, const std::string& key,
                           const std::string& rule) const;

    std::string as_string(const YAML::Node& node, const std::string& key) const;
    bool as_bool(const YAML::Node& node, const std::string& key) const;  // true/false/yes/no/...
    int as_int(const YAML::Node& node, const std::string& key, int min, int max) const;
    double as_double(const YAML::Node& node, const std::string& key, double min) const;
    std::vector<std::string> as_string_list(const YAML::Node& node, const std::string& key) const;
    // A mapping (or null/empty) converted to JSON for sections kept as given.
    nlohmann::json as_mapping_json(const YAML::Node& node, const std::string& key) const;

    template <typename Enum>
    Enum as_enum(const YAML::Node& node, const std::string& key,
                 const std::function<std::optional<Enum>(const std::string&)>& parse,
                 const std::vector<std::string>& allowed) const {
        const std::string text = as_string(node, key);
        auto value = parse(text);
        if (!value) fail(node, key, "must be one of " + join_allowed(allowed) + " (got '" + text + "')");
        return *value;
    }

private:
    // Every key and value of `node` is UTF-8 (ftl::Error(kConfig) naming the line otherwise).
    void check_decoded_scalars(const YAML::Node& node) const;
    static std::string join_allowed(const std::vector<std::string>& allowed);
    std::string source_;
};

// Scalar or nested YAML to JSON: unquoted numbers and true/false become numbers and booleans,
// null/~ becomes null, everything else a string.
nlohmann::json yaml_to_json(const YAML::Node& node);

}  // namespace ftl::config
