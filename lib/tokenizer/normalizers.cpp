// tokenizer.json normalizers (tokenizers' normalizers/), keeping each piece's byte alignment to
// the original input when it is tracked (piece.h).
#include <cstdlib>

#ifdef FTL_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#include "tokenizer/pipeline.h"
#include "tokenizer/stage_json.h"
#include "util/error.h"

namespace ftl::tokenizer {
namespace {

using namespace stage;

class SequenceNormalizer : public Normalizer {
public:
    std::vector<std::unique_ptr<Normalizer>> steps;
    void normalize(Piece& piece) const override {
        for (const auto& s : steps) s->normalize(piece);
    }
};

class PrependNormalizer : public Normalizer {
public:
    std::string prefix;
    void normalize(Piece& piece) const override { prepend(piece, prefix); }
};

class ReplaceNormalizer : public Normalizer {
public:
    ReplaceNormalizer(const json& j, const std::string& where)
        : pattern(j.value("pattern", json()), where + ".pattern"), content(text_field(j, "content", where)) {}
    Pattern pattern;
    std::string content;
    void normalize(Piece& piece) const override { replace_matches(piece, pattern.find_all(piece.text), content); }
};

class StripNormalizer : public Normalizer {
public:
    bool left = true, right = true;
    void normalize(Piece& piece) const override {
        auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
        const std::string& text = piece.text;
        size_t b = 0, e = text.size();
        if (left) while (b < e && is_space(text[b])) ++b;
        if (right) while (e > b && is_space(text[e - 1])) --e;
        keep_range(piece, b, e);
    }
};

#ifdef FTL_HAVE_UTF8PROC
// NFC/NFKC/NFD/NFKD through utf8proc. With a tracked piece the alignment follows tokenizers'
// (unicode-normalization-alignments): each character is decomposed on its own (the first
// resulting character replaces it, the others are inserted), canonical reordering carries each
// character's mark along, and a composition merges the marks (the composite replaces its
// starter and removes the characters folded into it).
class UnicodeNormalizer : public Normalizer {
public:
    explicit UnicodeNormalizer(utf8proc_option_t o) : options(o) {}
    utf8proc_option_t options;

    void normalize(Piece& piece) const override {
        bool ascii = true;
        for (unsigned char c : piece.text) ascii = ascii && c < 0x80;
        if (ascii) return;  // every normal form leaves ASCII unchanged
        utf8proc_uint8_t* out = nullptr;
        auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(piece.text.data()),
                              static_cast<utf8proc_ssize_t>(piece.text.size()), &out,
                              static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
        if (n < 0) return;  // invalid UTF-8 was replaced before this stage; keep the text as is
        std::string normalized(reinterpret_cast<char*>(out), static_cast<size_t>(n));
        std::free(out);
        if (normalized == piece.text) return;
        if (!piece.origin.empty()) piece.origin = aligned(piece, normalized);
        piece.text = std::move(normalized);
    }

private:
    struct Char {
        int32_t cp;
        long change;  // tokenizers' transform changes: 0 replaces, 1 inserts, -n replaces and removes n
    };

    static int ccc(int32_t cp) { return utf8proc_get_property(cp)->combining_class; }

    // The alignment of `normalized` (the whole piece's normal form), or, should the
    // character-by-character derivation not reproduce it, every byte aligned to the whole piece.
    std::vector<ByteRange> aligned(const Piece& piece, const std::string& normalized) const {
        std::vector<int32_t> input;
        std::vector<size_t> input_byte;
        for (utf8proc_ssize_t at = 0; at < static_cast<utf8proc_ssize_t>(piece.text.size());) {
            utf8proc_int32_t cp = 0;
            const auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(piece.text.data()) + at,
                                              static_cast<utf8proc_ssize_t>(piece.text.size()) - at, &cp);
            if (len <= 0) return coarse(piece, normalized);
            input.push_back(cp);
            input_byte.push_back(static_cast<size_t>(at));
            at += len;
        }
        std::vector<Char> chars = decomposed(input);
        reorder(chars);
        if (options & UTF8PROC_COMPOSE) compose(chars);

        std::string text;
        std::vector<ByteRange> origin;
        size_t next = 0;  // the input character the next replacement consumes
        for (const Char& c : chars) {
            ByteRange align{};
            if (c.change > 0) {
                const size_t at = next < input.size() ? input_byte[next] : piece.text.size();
                if (at > 0) align = piece.origin[at - 1];
            } else {
                if (next >= input.size()) return coarse(piece, normalized);
                align = piece.origin[input_byte[next]];
                next += 1 + static_cast<size_t>(-c.change);
            }
            const size_t before = text.size();
            append_utf8(text, static_cast<uint32_t>(c.cp));
            origin.insert(origin.end(), text.size() - before, align);
        }
        if (text != normalized) return coarse(piece, normalized);
        return origin;
    }

    static std::vector<ByteRange> coarse(const Piece& piece, const std::string& normalized) {
        return std::vector<ByteRange>(normalized.size(), {piece.origin.front().begin, piece.origin.back().end});
    }

    std::vector<Char> decomposed(const std::vector<int32_t>& input) const {
        const auto decompose_options =
            static_cast<utf8proc_option_t>((options & UTF8PROC_COMPAT) | UTF8PROC_DECOMPOSE | UTF8PROC_STABLE);
        std::vector<Char> chars;
        utf8proc_int32_t buffer[32];
        for (int32_t cp : input) {
            int boundclass = UTF8PROC_BOUNDCLASS_START;
            auto n = utf8proc_decompose_char(cp, buffer, 32, decompose_options, &boundclass);
            if (n <= 0 || n > 32) {
                chars.push_back({cp, 0});
                continue;
            }
            for (utf8proc_ssize_t i = 0; i < n; ++i) chars.push_back({buffer[i], i > 0 ? 1 : 0});
        }
        return chars;
    }

    // Canonical ordering: each run of non-starters stably sorted by combining class.
    static void reorder(std::vector<Char>& chars) {
        for (size_t b = 0; b < chars.size();) {
            if (ccc(chars[b].cp) == 0) {
                ++b;
                continue;
            }
            size_t e = b;
            while (e < chars.size() && ccc(chars[e].cp) != 0) ++e;
            std::stable_sort(chars.begin() + static_cast<long>(b), chars.begin() + static_cast<long>(e),
                             [](const Char& x, const Char& y) { return ccc(x.cp) < ccc(y.cp); });
            b = e;
        }
    }

    // Canonical composition (UAX #15): a character not blocked from the last starter merges into
    // it when the two have a primary composite.
    static void compose(std::vector<Char>& chars) {
        std::vector<Char> out;
        long starter = -1;
        int last_class = -1;  // combining class of the last character kept after the starter
        for (const Char& c : chars) {
            const int cc = ccc(c.cp);
            if (starter >= 0) {
                const bool adjacent = static_cast<size_t>(starter) + 1 == out.size();
                const bool blocked = !adjacent && (last_class == 0 || last_class >= cc);
                Char& s = out[static_cast<size_t>(starter)];
                if (!blocked) {
                    utf8proc_int32_t pair[2] = {s.cp, c.cp};
                    if (utf8proc_normalize_utf32(pair, 2, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE)) == 1) {
                        s.cp = pair[0];
                        s.change += c.change - 1;
                        continue;
                    }
                }
            }
            if (cc == 0) starter = static_cast<long>(out.size());
            out.push_back(c);
            last_class = cc;
        }
        chars = std::move(out);
    }
};
#endif

}  // namespace

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

bool unicode_normalization_available() {
#ifdef FTL_HAVE_UTF8PROC
    return true;
#else
    return false;
#endif
}

}  // namespace ftl::tokenizer
