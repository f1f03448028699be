#include "tokenizer/pipeline.h"

#include "tokenizer/stage_json.h"
#include "tokenizer/text.h"
#include "util/error.h"

namespace ftl::tokenizer {
namespace stage {

void bad(const std::string& where, const std::string& rule) { fail(ErrorKind::kConfig, where + ": " + rule); }

void unsupported(const std::string& where, const std::string& type, const char* supported) {
    bad(where, "type '" + type + "' is not supported (supported: " + supported + ")");
}

std::string type_of(const json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
        bad(where, "must be an object with a string 'type'");
    return j["type"].get<std::string>();
}

std::string text_field(const json& j, const char* key, const std::string& where,
                       std::optional<std::string> fallback) {
    if (!j.contains(key) || j[key].is_null()) {
        if (fallback) return *fallback;
        bad(where + "." + key, "required string is missing");
    }
    if (!j[key].is_string()) bad(where + "." + key, "must be a string");
    return j[key].get<std::string>();
}

bool bool_field(const json& j, const char* key, bool fallback, const std::string& where) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_boolean()) bad(where + "." + key, "must be true or false");
    return j[key].get<bool>();
}

size_t count_field(const json& j, const char* key, const std::string& where) {
    if (!j.contains(key) || j[key].is_null()) return 0;
    if (!j[key].is_number_unsigned()) bad(where + "." + key, "must be a non-negative integer (got " + j[key].dump() + ")");
    return j[key].get<size_t>();
}

Pattern::Pattern(const json& j, const std::string& where) {
    if (j.is_object() && j.contains("String") && j["String"].is_string()) {
        literal_ = j["String"].get<std::string>();
        if (literal_.empty()) bad(where, "String pattern must not be empty");
    } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
        regex_ = std::make_unique<Regex>(j["Regex"].get<std::string>(), where);
    } else {
        bad(where, "must be {\"String\": ...} or {\"Regex\": ...}");
    }
}

std::vector<std::pair<size_t, size_t>> Pattern::find_all(std::string_view text) const {
    if (regex_) return regex_->find_all(text);
    std::vector<std::pair<size_t, size_t>> out;
    for (size_t at = text.find(literal_); at != std::string_view::npos; at = text.find(literal_, at + literal_.size()))
        out.emplace_back(at, at + literal_.size());
    return out;
}

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
    if (!j.contains("prepend_scheme")) {
        // Files from tokenizers < 0.14 say add_prefix_space instead.
        return bool_field(j, "add_prefix_space", true, where) ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    const std::string s = text_field(j, "prepend_scheme", where);
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    bad(where + ".prepend_scheme", "'" + s + "' is not one of always, first, never");
}

}  // namespace stage

using namespace stage;

int32_t token_id(const json& value, const std::string& where) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= INT32_MAX)
        bad(where, "must be a token id, an integer in [0, 2^31-1) (got " + value.dump() + ")");
    return static_cast<int32_t>(value.get<int64_t>());
}

void surround(Encoding& encoding, const std::vector<int32_t>& before, const std::vector<int32_t>& after) {
    encoding.ids.insert(encoding.ids.begin(), before.begin(), before.end());
    encoding.ids.insert(encoding.ids.end(), after.begin(), after.end());
    if (!encoding.tracked) return;
    encoding.tokens.insert(encoding.tokens.begin(), before.size(), std::string());
    encoding.tokens.insert(encoding.tokens.end(), after.size(), std::string());
    encoding.offsets.insert(encoding.offsets.begin(), before.size(), ByteRange{});
    encoding.offsets.insert(encoding.offsets.end(), after.size(), ByteRange{});
}

namespace {

// ---- post-processors ----

class TemplatePostProcessor : public PostProcessor {
public:
    std::vector<int32_t> before, after;  // special ids around $A
    void process(Encoding& encoding, bool add_special_tokens) const override {
        if (add_special_tokens) surround(encoding, before, after);
    }
};

class SequencePostProcessor : public PostProcessor {
public:
    std::vector<std::unique_ptr<PostProcessor>> steps;
    void process(Encoding& encoding, bool add_special_tokens) const override {
        for (const auto& s : steps) s->process(encoding, add_special_tokens);
    }
};

// Adds no tokens; with trim_offsets, a token's offsets leave out its leading and trailing spaces
// (the byte-level 'Ġ' or real whitespace), except the one space add_prefix_space put before the
// first token (tokenizers processors/byte_level.rs process_offsets). tokenizers counts them in
// characters of the input, so the byte offsets move by as many whole characters.
class ByteLevelPostProcessor : public PostProcessor {
public:
    ByteLevelPostProcessor(const json& j, const std::string& where)
        : trim_offsets(bool_field(j, "trim_offsets", true, where)),
          add_prefix_space(bool_field(j, "add_prefix_space", true, where)) {}
    bool trim_offsets, add_prefix_space;
    Regex leading{R"(\A(\x{0120}|\s)+)", "ByteLevel trim"};
    Regex trailing{R"((\x{0120}|\s)+\z)", "ByteLevel trim"};

    void process(Encoding& encoding, bool) const override {
        if (!trim_offsets || !encoding.tracked) return;
        const std::string& text = encoding.text;
        auto is_lead = [&](uint32_t at) { return (static_cast<unsigned char>(text[at]) & 0xC0) != 0x80; };
        for (size_t i = 0; i < encoding.ids.size(); ++i) {
            ByteRange& range = encoding.offsets[i];
            size_t leading_chars = characters(encoding.tokens[i], leading);
            const size_t trailing_chars = characters(encoding.tokens[i], trailing);
            if (leading_chars > 0) {
                const bool first = i == 0 || range.begin == 0;
                if (first && add_prefix_space && leading_chars == 1) leading_chars = 0;
                for (size_t k = 0; k < leading_chars && range.begin < range.end; ++k)
                    range.begin += static_cast<uint32_t>(utf8_length(static_cast<unsigned char>(text[range.begin])));
                range.begin = std::min(range.begin, range.end);
            }
            if (trailing_chars > 0) {
                uint32_t end = range.end;
                size_t moved = 0;
                for (; moved < trailing_chars && end > 0; ++moved)
                    do --end;
                    while (end > 0 && !is_lead(end));
                if (moved == trailing_chars) range.end = std::max(end, range.begin);
            }
        }
    }

private:
    // How many characters of `token` the anchored `pattern` covers.
    static size_t characters(const std::string& token, const Regex& pattern) {
        const auto match = pattern.find_all(token);
        if (match.empty()) return 0;
        size_t count = 0;
        for (size_t at = match[0].first; at < match[0].second; at += utf8_length(static_cast<unsigned char>(token[at])))
            ++count;
        return count;
    }
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& where) {
    auto p = std::make_unique<TemplatePostProcessor>();
    if (!j.contains("single") || !j["single"].is_array()) bad(where + ".single", "must be a list");
    const json& specials = j.value("special_tokens", json::object());
    bool seen_sequence = false;
    for (const auto& item : j["single"]) {
        if (item.contains("Sequence")) {
            if (seen_sequence) bad(where + ".single", "names the sequence twice");
            seen_sequence = true;
        } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
            const std::string name = item["SpecialToken"]["id"].get<std::string>();
            if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
                bad(where + ".special_tokens", "has no ids for '" + name + "' used in single");
            for (const auto& id : specials[name]["ids"])
                (seen_sequence ? p->after : p->before)
                    .push_back(token_id(id, where + ".special_tokens['" + name + "'].ids"));
        } else {
            bad(where + ".single", "entries must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        }
    }
    return p;
}

std::unique_ptr<PostProcessor> make_cls_sep(const json& j, const std::string& where) {
    auto p = std::make_unique<TemplatePostProcessor>();
    for (const char* key : {"cls", "sep"})
        if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2)
            bad(where + "." + key, "must be [token, id]");
    p->before.push_back(token_id(j["cls"][1], where + ".cls[1]"));
    p->after.push_back(token_id(j["sep"][1], where + ".sep[1]"));
    return p;
}

// ---- decoders ----

class SequenceDecoder : public Decoder {
public:
    std::vector<std::unique_ptr<Decoder>> steps;
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (const auto& s : steps) s->decode_chain(tokens);
    }
};

class ByteLevelDecoder : public Decoder {
public:
    ByteLevelAlphabet alphabet;
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string bytes;
        for (const auto& t : tokens) {
            // A token made only of alphabet characters turns back into its bytes; any other token
            // (an added token such as <|im_end|>) is taken as is.
            std::string decoded;
            bool all = true;
            for (size_t i = 0; i < t.size() && all;) {
                const size_t n = utf8_length(static_cast<unsigned char>(t[i]));
                uint32_t cp = static_cast<unsigned char>(t[i]);
                if (n == 2 && i + 1 < t.size()) cp = ((cp & 0x1F) << 6) | (static_cast<unsigned char>(t[i + 1]) & 0x3F);
                const int b = n <= 2 ? alphabet.byte_of(cp) : -1;
                if (b < 0) all = false;
                else decoded.push_back(static_cast<char>(b));
                i += n;
            }
            bytes += all ? decoded : t;
        }
        tokens.assign(1, utf8_lossy(bytes));
    }
};

class MetaspaceDecoder : public Decoder {
public:
    std::string replacement;
    PrependScheme scheme;
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            const std::string& t = tokens[i];
            for (size_t at = 0; at < t.size();) {
                if (t.compare(at, replacement.size(), replacement) == 0) {
                    if (!(i == 0 && scheme != PrependScheme::kNever)) out.push_back(' ');
                    at += replacement.size();
                } else {
                    out.push_back(t[at++]);
                }
            }
            tokens[i] = std::move(out);
        }
    }
};

class ReplaceDecoder : public Decoder {
public:
    ReplaceDecoder(const json& j, const std::string& where)
        : pattern(j.value("pattern", json()), where + ".pattern"), content(text_field(j, "content", where)) {}
    Pattern pattern;
    std::string content;
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            Piece piece{std::move(t), false, {}};
            replace_matches(piece, pattern.find_all(piece.text), content);
            t = std::move(piece.text);
        }
    }
};

class ByteFallbackDecoder : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
            if (pending.empty()) return;
            if (is_valid_utf8(pending)) out.push_back(pending);
            else for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
            pending.clear();
        };
        for (auto& t : tokens) {
            unsigned value = 0;
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                std::sscanf(t.c_str() + 3, "%2x", &value) == 1 && std::isxdigit(static_cast<unsigned char>(t[3])) &&
                std::isxdigit(static_cast<unsigned char>(t[4]))) {
                pending.push_back(static_cast<char>(value));
                continue;
            }
            flush();
            out.push_back(std::move(t));
        }
        flush();
        tokens = std::move(out);
    }
};

class FuseDecoder : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, all);
    }
};

class StripDecoder : public Decoder {
public:
    std::string content;  // one character
    size_t start = 0, stop = 0;
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            size_t b = 0, e = t.size();
            for (size_t i = 0; i < start && t.compare(b, content.size(), content) == 0; ++i) b += content.size();
            for (size_t i = 0; i < stop && e >= b + content.size() &&
                               t.compare(e - content.size(), content.size(), content) == 0; ++i)
                e -= content.size();
            t = t.substr(b, e - b);
        }
    }
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& where) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, where);
    if (type == "TemplateProcessing") return make_template(j, where);
    if (type == "ByteLevel") return std::make_unique<ByteLevelPostProcessor>(j, where);
    if (type == "RobertaProcessing" || type == "BertProcessing") return make_cls_sep(j, where);
    if (type == "Sequence") {
        auto s = std::make_unique<SequencePostProcessor>();
        add_steps(s->steps, j, "processors", where, make_post_processor);
        return s;
    }
    unsupported(where, type, "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence");
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        auto s = std::make_unique<SequenceDecoder>();
        add_steps(s->steps, j, "decoders", where, make_decoder);
        return s;
    }
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Metaspace") {
        auto m = std::make_unique<MetaspaceDecoder>();
        m->replacement = text_field(j, "replacement", where, std::string("\xE2\x96\x81"));
        m->scheme = parse_prepend_scheme(j, where);
        return m;
    }
    if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, where);
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip") {
        auto s = std::make_unique<StripDecoder>();
        s->content = text_field(j, "content", where);
        s->start = count_field(j, "start", where);
        s->stop = count_field(j, "stop", where);
        return s;
    }
    unsupported(where, type, "Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip");
}

}  // namespace ftl::tokenizer
