#include "config/yaml_reader.h"

#include <algorithm>
#include <cstdio>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

YAML::Node YamlReader::load_text(const std::string& text) const {
    // A YAML stream is UTF-8 of printable characters (YAML 1.2, c-printable: no C0 controls but tab,
    // LF and CR). yaml-cpp does not check, and mangles some (a NUL byte turns the rest of a key into
    // invalid UTF-8); the values end up in JSON (logs, run records), which must be UTF-8.
    auto refuse = [&](size_t offset, const std::string& what) {
        const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(offset), '\n');
        char byte[8];
        std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(text[offset]));
        ftl::fail(ErrorKind::kConfig, source_ + ":" + std::to_string(line) + ": byte " + byte + " (offset " +
                                          std::to_string(offset) + ") " + what);
    };
    if (const auto bad = first_invalid_utf8(text)) refuse(*bad, "is not UTF-8; save the file as UTF-8");
    for (size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
            refuse(i, "is a control character, which YAML does not allow");
    }
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
        ftl::fail(ErrorKind::kConfig, source_ + ":" + std::to_string(e.mark.line + 1) + ":" +
                                          std::to_string(e.mark.column + 1) +
                                          ": YAML syntax error: " + e.msg);
    }
    check_decoded_scalars(root);
    return root;
}

void YamlReader::check_decoded_scalars(const YAML::Node& node) const {
    // yaml-cpp decodes YAML's escapes \_ (no-break space, U+00A0) and \N (next line, U+0085) in
    // double-quoted strings to single bytes, not UTF-8: such a key or value would reach the logs
    // and run records as invalid UTF-8.
    if (node.IsScalar()) {
        if (first_invalid_utf8(node.Scalar()))
            ftl::fail(ErrorKind::kConfig, location(node) + ": a quoted string's escape decodes to invalid UTF-8 (this "
                                                           "build's YAML parser turns \\_ and \\N into single bytes); "
                                                           "write the character itself instead");
    } else if (node.IsSequence()) {
        for (const auto& item : node) check_decoded_scalars(item);
    } else if (node.IsMap()) {
        for (const auto& item : node) {
            check_decoded_scalars(item.first);
            check_decoded_scalars(item.second);
        }
    }
}

std::string YamlReader::location(const YAML::Node& node) const {
    const auto mark = node.Mark();
    if (mark.line < 0) return source_;
    return source_ + ":" + std::to_string(mark.line + 1);
}

void YamlReader::fail(const YAML::Node& node, const std::string& key, const std::string& rule) const {
    ftl::fail(ErrorKind::kConfig, location(node) + ": " + key + ": " + rule);
}

std::string YamlReader::join_allowed(const std::vector<std::string>& allowed) {
    return ftl::join(allowed, ", ");
}

std::string YamlReader::as_string(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) fail(node, key, "must be a single value, not a list or mapping");
    return node.Scalar();
}

bool YamlReader::as_bool(const YAML::Node& node, const std::string& key) const {
    const std::string text = as_string(node, key);
    auto value = parse_bool(text);
    if (!value) {
        const std::string word = to_lower(text);
        if (word == "on") return true;
        if (word == "off") return false;
        fail(node, key, "must be true or false (got '" + text + "')");
    }
    return *value;
}

int YamlReader::as_int(const YAML::Node& node, const std::string& key, int min, int max) const {
    const std::string text = as_string(node, key);
    auto value = parse_int(text);
    if (!value) fail(node, key, "must be an integer (got '" + text + "')");
    if (*value < min || *value > max)
        fail(node, key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                            " (got " + text + ")");
    return static_cast<int>(*value);
}

double YamlReader::as_double(const YAML::Node& node, const std::string& key, double min) const {
    const std::string text = as_string(node, key);
    auto value = parse_double(text);
    if (!value) fail(node, key, "must be a number (got '" + text + "')");
    if (*value < min) fail(node, key, "must be at least " + std::to_string(min) + " (got " + text + ")");
    return *value;
}

std::vector<std::string> YamlReader::as_string_list(const YAML::Node& node,
                                                    const std::string& key) const {
    std::vector<std::string> out;
    if (node.IsNull()) return out;
    if (node.IsScalar()) return {node.Scalar()};
    if (!node.IsSequence()) fail(node, key, "must be a list of strings");
    for (const auto& item : node) out.push_back(as_string(item, key + "[]"));
    return out;
}

nlohmann::json YamlReader::as_mapping_json(const YAML::Node& node, const std::string& key) const {
    if (node.IsNull()) return nlohmann::json::object();
    if (!node.IsMap()) fail(node, key, "must be a mapping of key: value");
    return yaml_to_json(node);
}

nlohmann::json yaml_to_json(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Null:
        case YAML::NodeType::Undefined:
            return nullptr;
        case YAML::NodeType::Sequence: {
            auto out = nlohmann::json::array();
            for (const auto& item : node) out.push_back(yaml_to_json(item));
            return out;
        }
        case YAML::NodeType::Map: {
            auto out = nlohmann::json::object();
            for (const auto& item : node) out[item.first.Scalar()] = yaml_to_json(item.second);
            return out;
        }
        case YAML::NodeType::Scalar:
            break;
    }
    const std::string& text = node.Scalar();
    if (node.Tag() == "!") return text;  // quoted: always a string
    if (text == "~" || text == "null") return nullptr;
    if (text == "true" || text == "True") return true;
    if (text == "false" || text == "False") return false;
    if (auto i = parse_int(text)) return *i;
    if (auto d = parse_double(text)) return *d;
    return text;
}

}  // namespace ftl::config
