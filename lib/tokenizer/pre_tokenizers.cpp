// tokenizer.json pre-tokenizers (tokenizers' pre_tokenizers/): split pieces into the words the
// model sees, keeping each piece's byte alignment to the original input when it is tracked.
#include <algorithm>

#include "tokenizer/pipeline.h"
#include "tokenizer/stage_json.h"

namespace ftl::tokenizer {
namespace {

using namespace stage;

// GPT-2's split pattern, used by ByteLevel(use_regex=true) (tokenizers pre_tokenizers/byte_level.rs).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

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
        if (e > b) out.push_back(slice(piece, b, e));
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
            if (add_prefix_space && !p.text.empty() && p.text[0] != ' ') prepend(p, " ");
            if (regex) split_piece(p, regex->find_all(p.text), false, Behavior::kIsolated, out);
            else if (!p.text.empty()) out.push_back(std::move(p));
        }
        for (auto& p : out) to_alphabet(p);
        pieces = std::move(out);
    }

private:
    // Each byte becomes its alphabet character; the first of a UTF-8 character's replaces it,
    // the others are inserted (so all keep that character's alignment).
    void to_alphabet(Piece& p) const {
        std::string mapped;
        std::vector<ByteRange> origin;
        mapped.reserve(p.text.size() * 2);
        for (size_t i = 0; i < p.text.size();) {
            const size_t n = std::min(utf8_length(static_cast<unsigned char>(p.text[i])), p.text.size() - i);
            for (size_t k = 0; k < n; ++k) {
                const std::string& c = alphabet.byte_to_text[static_cast<unsigned char>(p.text[i + k])];
                mapped += c;
                if (!p.origin.empty()) origin.insert(origin.end(), c.size(), p.origin[k == 0 ? i : i + n - 1]);
            }
            i += n;
        }
        p.text = std::move(mapped);
        p.origin = std::move(origin);
    }
};

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
            std::vector<std::pair<size_t, size_t>> spaces;
            for (size_t at = p.text.find(' '); at != std::string::npos; at = p.text.find(' ', at + 1))
                spaces.emplace_back(at, at + 1);
            replace_matches(p, spaces, replacement);
            const bool starts = p.text.compare(0, replacement.size(), replacement) == 0;
            if (!starts && (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && p.at_start)))
                prepend(p, replacement);
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

}  // namespace

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

}  // namespace ftl::tokenizer
