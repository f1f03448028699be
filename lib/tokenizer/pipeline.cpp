#include "tokenizer/pipeline.h"

#include <nlohmann/json.hpp>

#ifdef FTL_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#include "tokenizer/text.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::tokenizer {
namespace {

using nlohmann::json;

// GPT-2's split pattern, used by ByteLevel(use_regex=true) (tokenizers pre_tokenizers/byte_level.rs).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

[[noreturn]] void bad(const std::string& where, const std::string& rule) {
    fail(ErrorKind::kConfig, where + ": " + rule);
}

std::string type_of(const json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
        bad(where, "must be an object with a string 'type'");
    return j["type"].get<std::string>();
}

std::string text_field(const json& j, const char* key, const std::string& where,
                       std::optional<std::string> fallback = std::nullopt) {
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

}  // namespace

int32_t token_id(const json& value, const std::string& where) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= INT32_MAX)
        bad(where, "must be a token id, an integer in [0, 2^31-1) (got " + value.dump() + ")");
    return static_cast<int32_t>(value.get<int64_t>());
}

namespace {

[[noreturn]] void unsupported(const std::string& where, const std::string& type, const char* supported) {
    bad(where, "type '" + type + "' is not supported (supported: " + supported + ")");
}

// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
class Pattern {
public:
    Pattern(const json& j, const std::string& where) {
        if (j.is_object() && j.contains("String") && j["String"].is_string()) {
            literal_ = j["String"].get<std::string>();
            if (literal_.empty()) bad(where, "String pattern must not be empty");
        } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
            regex_ = std::make_unique<Regex>(j["Regex"].get<std::string>(), where);
        } else {
            bad(where, "must be {\"String\": ...} or {\"Regex\": ...}");
        }
    }
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
        if (regex_) return regex_->find_all(text);
        std::vector<std::pair<size_t, size_t>> out;
        for (size_t at = text.find(literal_); at != std::string_view::npos; at = text.find(literal_, at + literal_.size()))
            out.emplace_back(at, at + literal_.size());
        return out;
    }

private:
    std::string literal_;
    std::unique_ptr<Regex> regex_;
};

// ---- normalizers ----

class SequenceNormalizer : public Normalizer {
public:
    std::vector<std::unique_ptr<Normalizer>> steps;
    void normalize(std::string& text) const override {
        for (const auto& s : steps) s->normalize(text);
    }
};

class PrependNormalizer : public Normalizer {
public:
    std::string prefix;
    void normalize(std::string& text) const override {
        if (!text.empty()) text.insert(0, prefix);
    }
};

class ReplaceNormalizer : public Normalizer {
public:
    ReplaceNormalizer(const json& j, const std::string& where)
        : pattern(j.value("pattern", json()), where + ".pattern"), content(text_field(j, "content", where)) {}
    Pattern pattern;
    std::string content;
    void normalize(std::string& text) const override {
        auto matches = pattern.find_all(text);
        if (matches.empty()) return;
        std::string out;
        size_t last = 0;
        for (auto [b, e] : matches) {
            out.append(text, last, b - last);
            out += content;
            last = e;
        }
        out.append(text, last);
        text = std::move(out);
    }
};

class StripNormalizer : public Normalizer {
public:
    bool left = true, right = true;
    void normalize(std::string& text) const override {
        auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
        size_t b = 0, e = text.size();
        if (left) while (b < e && is_space(text[b])) ++b;
        if (right) while (e > b && is_space(text[e - 1])) --e;
        text = text.substr(b, e - b);
    }
};

#ifdef FTL_HAVE_UTF8PROC
class UnicodeNormalizer : public Normalizer {
public:
    utf8proc_option_t options;
    explicit UnicodeNormalizer(utf8proc_option_t o) : options(o) {}
    void normalize(std::string& text) const override {
        bool ascii = true;
        for (unsigned char c : text) ascii = ascii && c < 0x80;
        if (ascii) return;  // every normal form leaves ASCII unchanged
        utf8proc_uint8_t* out = nullptr;
        auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                              static_cast<utf8proc_ssize_t>(text.size()), &out,
                              static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
        if (n < 0) return;  // invalid UTF-8 was replaced before this stage; keep the text as is
        text.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
        std::free(out);
    }
};
#endif

// ---- pre-tokenizers ----

enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const json& j, const std::string& where) {
    const std::string b = text_field(j, "behavior", where);
    if (b == "Isolated") return Behavior::kIsolated;
    if (b == "Removed") return Behavior::kRemoved;
    if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
    if (b == "MergedWithNext") return Behavior::kMergedWithNext;
    if (b == "Contiguous") return Behavior::kContiguous;
    bad(where + ".behavior", "'" + b + "' is not one of Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous");
}

// Splits `piece` at `matches` (sorted, non-overlapping) as SplitDelimiterBehavior does, appending
// the non-empty results to `out`.
void split_piece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, bool invert,
                 Behavior behavior, std::vector<Piece>& out) {
    // Cover the text with (begin, end, is_match) spans.
    struct Span {
        size_t b, e;
        bool match;
    };
    std::vector<Span> spans;
    size_t last = 0;
    for (auto [b, e] : matches) {
        if (b > last) spans.push_back({last, b, invert});
        spans.push_back({b, e, !invert});
        last = e;
    }
    if (last < piece.text.size()) spans.push_back({last, piece.text.size(), invert});

    std::vector<std::pair<size_t, size_t>> ranges;
    switch (behavior) {
        case Behavior::kIsolated:
            for (const auto& s : spans) ranges.emplace_back(s.b, s.e);
            break;
        case Behavior::kRemoved:
            for (const auto& s : spans)
                if (!s.match) ranges.emplace_back(s.b, s.e);
            break;
        case Behavior::kMergedWithPrevious: {
            bool previous_was_gap = false;
            for (const auto& s : spans) {
                if (s.match && previous_was_gap) ranges.back().second = s.e;
                else ranges.emplace_back(s.b, s.e);
                previous_was_gap = !s.match;
            }
            break;
        }
        case Behavior::kMergedWithNext: {
            bool previous_was_match = false;
            for (const auto& s : spans) {
                if (!s.match && previous_was_match) ranges.back().second = s.e;
                else ranges.emplace_back(s.b, s.e);
                previous_was_match = s.match;
            }
            break;
        }
        case Behavior::kContiguous: {
            bool previous_was_match = false;
            for (const auto& s : spans) {
                if (s.match && previous_was_match) ranges.back().second = s.e;
                else ranges.emplace_back(s.b, s.e);
                previous_was_match = s.match;
            }
            break;
        }
    }
    for (auto [b, e] : ranges)
        if (e > b) out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
}

class SequencePreTokenizer : public PreTokenizer {
public:
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    void split(std::vector<Piece>& pieces) const override {
        for (const auto& s : steps) s->split(pieces);
    }
};

class SplitPreTokenizer : public PreTokenizer {
public:
    SplitPreTokenizer(const json& j, const std::string& where)
        : pattern(j.value("pattern", json()), where + ".pattern"),
          behavior(parse_behavior(j, where)),
          invert(bool_field(j, "invert", false, where)) {}
    Pattern pattern;
    Behavior behavior;
    bool invert;
    void split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        for (const auto& p : pieces) split_piece(p, pattern.find_all(p.text), invert, behavior, out);
        pieces = std::move(out);
    }
};

class ByteLevelPreTokenizer : public PreTokenizer {
public:
    ByteLevelPreTokenizer(const json& j, const std::string& where)
        : add_prefix_space(bool_field(j, "add_prefix_space", true, where)),
          regex(bool_field(j, "use_regex", true, where) ? std::make_unique<Regex>(kGpt2Pattern, where) : nullptr) {}
    bool add_prefix_space;
    std::unique_ptr<Regex> regex;
    ByteLevelAlphabet alphabet;
    void split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        for (auto p : pieces) {
            if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
            if (regex) split_piece(p, regex->find_all(p.text), false, Behavior::kIsolated, out);
            else if (!p.text.empty()) out.push_back(std::move(p));
        }
        for (auto& p : out) {
            std::string mapped;
            mapped.reserve(p.text.size() * 2);
            for (unsigned char c : p.text) mapped += alphabet.byte_to_text[c];
            p.text = std::move(mapped);
        }
        pieces = std::move(out);
    }
};

enum class PrependScheme { kAlways, kFirst, kNever };

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

class MetaspacePreTokenizer : public PreTokenizer {
public:
    MetaspacePreTokenizer(const json& j, const std::string& where)
        : replacement(text_field(j, "replacement", where, std::string("\xE2\x96\x81"))),
          scheme(parse_prepend_scheme(j, where)),
          split_on_replacement(bool_field(j, "split", true, where)) {}
    std::string replacement;
    PrependScheme scheme;
    bool split_on_replacement;
    void split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        for (auto p : pieces) {
            std::string replaced;
            for (char c : p.text) {
                if (c == ' ') replaced += replacement;
                else replaced.push_back(c);
            }
            p.text = std::move(replaced);
            const bool starts = p.text.compare(0, replacement.size(), replacement) == 0;
            if (!starts && (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && p.at_start)))
                p.text.insert(0, replacement);
            if (!split_on_replacement) {
                if (!p.text.empty()) out.push_back(std::move(p));
                continue;
            }
            std::vector<std::pair<size_t, size_t>> matches;
            for (size_t at = p.text.find(replacement); at != std::string::npos;
                 at = p.text.find(replacement, at + replacement.size()))
                matches.emplace_back(at, at + replacement.size());
            split_piece(p, matches, false, Behavior::kMergedWithNext, out);
        }
        pieces = std::move(out);
    }
};

class DigitsPreTokenizer : public PreTokenizer {
public:
    DigitsPreTokenizer(const json& j, const std::string& where)
        : individual(bool_field(j, "individual_digits", false, where)), digits(R"(\p{N})", where) {}
    bool individual;
    Regex digits;
    void split(std::vector<Piece>& pieces) const override {
        std::vector<Piece> out;
        for (const auto& p : pieces)
            split_piece(p, digits.find_all(p.text), false, individual ? Behavior::kIsolated : Behavior::kContiguous, out);
        pieces = std::move(out);
    }
};

// ---- post-processors ----

class TemplatePostProcessor : public PostProcessor {
public:
    std::vector<int32_t> before, after;  // special ids around $A
    void process(std::vector<int32_t>& ids) const override {
        ids.insert(ids.begin(), before.begin(), before.end());
        ids.insert(ids.end(), after.begin(), after.end());
    }
};

class SequencePostProcessor : public PostProcessor {
public:
    std::vector<std::unique_ptr<PostProcessor>> steps;
    void process(std::vector<int32_t>& ids) const override {
        for (const auto& s : steps) s->process(ids);
    }
};

class NoOpPostProcessor : public PostProcessor {
public:
    void process(std::vector<int32_t>&) const override {}
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
    ReplaceDecoder(const json& j, const std::string& where) : normalizer(j, where) {}
    ReplaceNormalizer normalizer;
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) normalizer.normalize(t);
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

template <typename Step, typename Make>
void add_steps(std::vector<std::unique_ptr<Step>>& steps, const json& j, const char* key,
               const std::string& where, Make make) {
    if (!j.contains(key) || !j[key].is_array()) bad(where + "." + key, "must be a list");
    for (size_t i = 0; i < j[key].size(); ++i) {
        auto step = make(j[key][i], where + "." + key + "[" + std::to_string(i) + "]");
        if (step) steps.push_back(std::move(step));
    }
}

}  // namespace

bool unicode_normalization_available() {
#ifdef FTL_HAVE_UTF8PROC
    return true;
#else
    return false;
#endif
}

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        auto s = std::make_unique<SequenceNormalizer>();
        add_steps(s->steps, j, "normalizers", where, make_normalizer);
        return s;
    }
    if (type == "Prepend") {
        auto p = std::make_unique<PrependNormalizer>();
        p->prefix = text_field(j, "prepend", where);
        return p;
    }
    if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j, where);
    if (type == "Strip") {
        auto s = std::make_unique<StripNormalizer>();
        s->left = bool_field(j, "strip_left", true, where);
        s->right = bool_field(j, "strip_right", true, where);
        return s;
    }
    if (type == "NFC" || type == "NFKC" || type == "NFD" || type == "NFKD") {
#ifdef FTL_HAVE_UTF8PROC
        int o = type[0] == 'N' && type.size() == 3 ? 0 : UTF8PROC_COMPAT;
        o |= type.back() == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
        return std::make_unique<UnicodeNormalizer>(static_cast<utf8proc_option_t>(o));
#else
        bad(where, "type '" + type + "' needs Unicode tables: this build has no utf8proc (install libutf8proc-dev and rebuild)");
#endif
    }
    unsupported(where, type, "Sequence, Prepend, Replace, Strip, NFC, NFKC, NFD, NFKD");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        auto s = std::make_unique<SequencePreTokenizer>();
        add_steps(s->steps, j, "pretokenizers", where, make_pre_tokenizer);
        return s;
    }
    if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(j, where);
    if (type == "Split") return std::make_unique<SplitPreTokenizer>(j, where);
    if (type == "Metaspace") return std::make_unique<MetaspacePreTokenizer>(j, where);
    if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(j, where);
    unsupported(where, type, "Sequence, ByteLevel, Split, Metaspace, Digits");
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& where) {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, where);
    if (type == "TemplateProcessing") return make_template(j, where);
    if (type == "ByteLevel") return std::make_unique<NoOpPostProcessor>();
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
