// Python's semantics for what templates compute with: str methods on UTF-8 text (code points,
// Unicode whitespace and letter case), argument passing, integer overflow and size limits.
#include <algorithm>
#include <cstdint>

#include "jinja/builtins.h"
#include "util/strings.h"

#ifdef FTL_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

namespace ftl::jinja {

void raise(const std::string& message) { throw RenderError(message); }

// Python's str.isspace() for one code point (UTF-8 text).
bool is_python_space(const std::string& cp) {
    static const char* spaces[] = {" ", "\t", "\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x1f",
                                   "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9",
                                   "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
    for (const char* s : spaces)
        if (cp == s) return true;
    // U+2000..U+200A: E2 80 80..8A
    return cp.size() == 3 && static_cast<unsigned char>(cp[0]) == 0xE2 && static_cast<unsigned char>(cp[1]) == 0x80 &&
           static_cast<unsigned char>(cp[2]) >= 0x80 && static_cast<unsigned char>(cp[2]) <= 0x8A;
}

namespace {

// Letters whose Python case mapping is not one simple mapping (Unicode's SpecialCasing: ß, İ,
// ŉ, ǰ, ΐ, ΰ, և, ẖ..ẚ, ὐ..ὖ, the Greek extended block, the ligatures ﬀ..ﬆ and ﬓ..ﬗ) and Σ,
// whose lowercase depends on the letters around it (final sigma).
bool special_casing(int32_t cp, Case c) {
    return cp == 0xDF || cp == 0x130 || cp == 0x149 || cp == 0x1F0 || cp == 0x390 || cp == 0x3B0 || cp == 0x587 ||
           (cp == 0x3A3 && c != Case::kUpper) || (cp >= 0x1E96 && cp <= 0x1E9A) || (cp >= 0x1F50 && cp <= 0x1F56) ||
           (cp >= 0x1F80 && cp <= 0x1FFF) || (cp >= 0xFB00 && cp <= 0xFB06) || (cp >= 0xFB13 && cp <= 0xFB17);
}

// One code point (UTF-8) as Python's upper/lower/title map it, and whether it has case at all
// (Python's "cased": Lu, Ll, Lt). ASCII directly; beyond it utf8proc's simple mappings, and a
// letter Python maps specially is refused rather than mapped differently. Without utf8proc,
// any non-ASCII code point is refused.
struct CaseResult {
    std::string text;
    bool cased = false;
};
CaseResult map_case(const std::string& cp, Case c) {
    if (cp.size() == 1) {
        char ch = cp[0];
        const bool lower = ch >= 'a' && ch <= 'z', upper = ch >= 'A' && ch <= 'Z';
        if (lower && c != Case::kLower) ch = static_cast<char>(ch - 'a' + 'A');
        if (upper && c == Case::kLower) ch = static_cast<char>(ch - 'A' + 'a');
        return {std::string(1, ch), lower || upper};
    }
#ifdef FTL_HAVE_UTF8PROC
    utf8proc_int32_t code = -1;
    utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(cp.data()), static_cast<utf8proc_ssize_t>(cp.size()), &code);
    if (code < 0) return {cp, false};
    const utf8proc_category_t category = utf8proc_category(code);
    const bool cased = category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL || category == UTF8PROC_CATEGORY_LT;
    if (special_casing(code, c))
        raise("changing the case of '" + cp + "' (its Python mapping is a special case ftlaunch does not reproduce)");
    const utf8proc_int32_t mapped = c == Case::kUpper ? utf8proc_toupper(code)
                                    : c == Case::kLower ? utf8proc_tolower(code)
                                                        : utf8proc_totitle(code);
    utf8proc_uint8_t buf[4];
    const utf8proc_ssize_t n = utf8proc_encode_char(mapped, buf);
    return {std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n)), cased};
#else
    raise("changing the case of '" + cp + "' needs utf8proc, which this build lacks (ASCII only)");
#endif
}

}  // namespace

std::string change_case(const std::string& s, Case c) {
    std::string out;
    for (const std::string& cp : code_points(s)) out += map_case(cp, c).text;
    return out;
}

// Python's str.islower() / isupper(): some cased letter, and none in the other case.
bool all_cased_as(const std::string& s, Case c) {
    bool any = false;
    for (const std::string& cp : code_points(s)) {
        const CaseResult r = map_case(cp, c);
        if (!r.cased) continue;
        any = true;
        if (r.text != cp) return false;
    }
    return any;
}

const std::string& text_of(const Value& v, const std::string& what) {
    if (!v.is_string()) raise(what + " needs a string, got " + v.type_name());
    return v.as_string();
}

int64_t int_of(const Value& v, const std::string& what) {
    if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) raise(what + " needs an integer, got " + v.type_name());
    return v.as_int();
}

// The items a for loop or filter walks: a list's items, a dict's keys, a string's code points.
List items_of(const Value& v, const std::string& what) {
    switch (v.kind()) {
        case Value::Kind::kUndefined: return {};
        case Value::Kind::kList: return v.as_list();
        case Value::Kind::kDict: {
            List keys;
            for (const auto& [k, value] : v.as_dict()) keys.emplace_back(k);
            return keys;
        }
        case Value::Kind::kString: {
            List chars;
            for (auto& cp : code_points(v.as_string())) chars.emplace_back(cp);
            return chars;
        }
        default: raise(what + ": a " + v.type_name() + " is not iterable");
    }
}

std::vector<std::string> split_text(const std::string& s, const Value& separator, int64_t max_splits) {
    std::vector<std::string> out;
    if (separator.is_none() || separator.is_undefined()) {  // runs of whitespace, no empty pieces
        std::string piece;
        bool in_piece = false;
        const auto cps = code_points(s);
        for (size_t i = 0; i < cps.size(); ++i) {
            if (is_python_space(cps[i])) {
                if (in_piece) out.push_back(piece), piece.clear(), in_piece = false;
                continue;
            }
            if (!in_piece && max_splits >= 0 && static_cast<int64_t>(out.size()) == max_splits) {
                std::string rest;
                for (size_t j = i; j < cps.size(); ++j) rest += cps[j];
                out.push_back(rest);  // Python keeps the rest as it is, trailing whitespace included
                return out;
            }
            in_piece = true;
            piece += cps[i];
        }
        if (in_piece) out.push_back(piece);
        return out;
    }
    const std::string& sep = text_of(separator, "split");
    if (sep.empty()) raise("split: empty separator");
    size_t start = 0;
    while (max_splits < 0 || static_cast<int64_t>(out.size()) < max_splits) {
        const size_t at = s.find(sep, start);
        if (at == std::string::npos) break;
        out.push_back(s.substr(start, at - start));
        start = at + sep.size();
    }
    out.push_back(s.substr(start));
    return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
    std::string out;
    size_t start = 0;
    int64_t done = 0;
    if (from.empty()) {  // Python inserts `to` between code points
        const auto cps = code_points(s);
        for (const auto& cp : cps) {
            if (count < 0 || done < count) out += to, ++done;
            out += cp;
            check_size(out.size());
        }
        if (count < 0 || done < count) out += to;
        return out;
    }
    while (count < 0 || done < count) {
        const size_t at = s.find(from, start);
        if (at == std::string::npos) break;
        check_size(out.size() + (at - start) + to.size());
        out += s.substr(start, at - start) + to;
        start = at + from.size();
        ++done;
    }
    return out + s.substr(start);
}

// Python's str.capitalize: the first code point title-cased, the rest lowercased.
std::string capitalize(const std::string& s) {
    std::string out;
    bool first = true;
    for (const std::string& cp : code_points(s)) {
        out += map_case(cp, first ? Case::kTitle : Case::kLower).text;
        first = false;
    }
    return out;
}

// jinja2's title filter: each word (after whitespace, -, (, {, [ or <) its first code point
// uppercased, the rest lowercased.
std::string title(const std::string& s) {
    std::string out;
    bool word_start = true;
    for (const std::string& cp : code_points(s)) {
        const bool boundary = cp == " " || cp == "\t" || cp == "\n" || cp == "\r" || cp == "\f" || cp == "\v" ||
                              cp == "-" || cp == "(" || cp == "{" || cp == "[" || cp == "<" || is_python_space(cp);
        out += boundary ? cp : map_case(cp, word_start ? Case::kUpper : Case::kLower).text;
        word_start = boundary;
    }
    return out;
}

void check_size(size_t n) {
    if (n > kMaxBuilt) raise("the template builds a string or list of " + std::to_string(n) + " bytes/items (more than 64 Mi)");
}

int64_t checked_add(int64_t a, int64_t b) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) raise("integer overflow: ftlaunch's integers are 64-bit");
    return r;
}

int64_t checked_mul(int64_t a, int64_t b) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) raise("integer overflow: ftlaunch's integers are 64-bit");
    return r;
}

Value keyword_argument(CallArgs& args, const std::string& name, Value fallback) {
    for (const auto& [key, value] : args.keyword)
        if (key == name) return value;
    return fallback;
}

Value argument(CallArgs& args, size_t position, const std::string& name, Value fallback) {
    if (position < args.positional.size()) return args.positional[position];
    return keyword_argument(args, name, std::move(fallback));
}

std::string strip(const std::string& s, const Value& chars, int side) {
    const auto cps = code_points(s);
    std::vector<std::string> set;
    const bool whitespace = chars.is_none() || chars.is_undefined();
    if (!whitespace) set = code_points(text_of(chars, "strip"));
    auto strippable = [&](const std::string& cp) {
        return whitespace ? is_python_space(cp) : std::find(set.begin(), set.end(), cp) != set.end();
    };
    size_t begin = 0;
    size_t end = cps.size();
    if (side & 1)
        while (begin < end && strippable(cps[begin])) ++begin;
    if (side & 2)
        while (end > begin && strippable(cps[end - 1])) --end;
    std::string out;
    for (size_t i = begin; i < end; ++i) out += cps[i];
    return out;
}

}  // namespace ftl::jinja
