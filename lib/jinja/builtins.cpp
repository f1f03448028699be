#include "jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>

#include "util/strings.h"

#ifdef FTL_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

namespace ftl::jinja {
namespace {

[[noreturn]] void raise(const std::string& message) { throw RenderError(message); }

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

enum class Case { kUpper, kLower, kTitle };

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

Value string_list(const std::vector<std::string>& parts) {
    List items;
    for (const auto& p : parts) items.emplace_back(p);
    return Value::list(std::move(items));
}

bool affix_matches(const std::string& s, const Value& affix, bool prefix) {
    if (affix.kind() == Value::Kind::kList) {
        for (const Value& a : affix.as_list())
            if (affix_matches(s, a, prefix)) return true;
        return false;
    }
    const std::string& a = text_of(affix, prefix ? "startswith" : "endswith");
    return prefix ? starts_with(s, a) : ends_with(s, a);
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

Value bound(const Value& self, const std::string& name, std::function<Value(const Value&, CallArgs&)> method) {
    return Value::function(name, [self, method = std::move(method)](CallArgs& args) { return method(self, args); });
}

Value string_method(const Value& self, const std::string& name) {
    using M = std::function<Value(const Value&, CallArgs&)>;
    static const std::map<std::string, M> methods = {
        {"strip", [](const Value& s, CallArgs& a) { return Value(strip(s.as_string(), argument(a, 0, "chars", Value::none()), 3)); }},
        {"lstrip", [](const Value& s, CallArgs& a) { return Value(strip(s.as_string(), argument(a, 0, "chars", Value::none()), 1)); }},
        {"rstrip", [](const Value& s, CallArgs& a) { return Value(strip(s.as_string(), argument(a, 0, "chars", Value::none()), 2)); }},
        {"split", [](const Value& s, CallArgs& a) {
             return string_list(split_text(s.as_string(), argument(a, 0, "sep", Value::none()),
                                           int_of(argument(a, 1, "maxsplit", Value(-1)), "split")));
         }},
        {"startswith", [](const Value& s, CallArgs& a) { return Value(affix_matches(s.as_string(), argument(a, 0, "prefix", Value::none()), true)); }},
        {"endswith", [](const Value& s, CallArgs& a) { return Value(affix_matches(s.as_string(), argument(a, 0, "suffix", Value::none()), false)); }},
        {"upper", [](const Value& s, CallArgs&) { return Value(change_case(s.as_string(), Case::kUpper)); }},
        {"lower", [](const Value& s, CallArgs&) { return Value(change_case(s.as_string(), Case::kLower)); }},
        {"islower", [](const Value& s, CallArgs&) { return Value(all_cased_as(s.as_string(), Case::kLower)); }},
        {"isupper", [](const Value& s, CallArgs&) { return Value(all_cased_as(s.as_string(), Case::kUpper)); }},
        {"title", [](const Value& s, CallArgs&) { return Value(title(s.as_string())); }},
        {"capitalize", [](const Value& s, CallArgs&) { return Value(capitalize(s.as_string())); }},
        {"replace", [](const Value& s, CallArgs& a) {
             return Value(replace_all(s.as_string(), text_of(argument(a, 0, "old", Value::none()), "replace"),
                                      text_of(argument(a, 1, "new", Value::none()), "replace"),
                                      int_of(argument(a, 2, "count", Value(-1)), "replace")));
         }},
        {"find", [](const Value& s, CallArgs& a) {
             const size_t at = s.as_string().find(text_of(argument(a, 0, "sub", Value::none()), "find"));
             if (at == std::string::npos) return Value(-1);
             return Value(static_cast<int64_t>(code_points(s.as_string().substr(0, at)).size()));
         }},
        {"count", [](const Value& s, CallArgs& a) {
             const std::string& sub = text_of(argument(a, 0, "sub", Value::none()), "count");
             if (sub.empty()) return Value(static_cast<int64_t>(code_points(s.as_string()).size() + 1));
             int64_t n = 0;
             for (size_t at = s.as_string().find(sub); at != std::string::npos; at = s.as_string().find(sub, at + sub.size())) ++n;
             return Value(n);
         }},
        {"join", [](const Value& s, CallArgs& a) {
             std::string out;
             bool first = true;
             for (const Value& item : items_of(argument(a, 0, "iterable", Value::none()), "join")) {
                 if (!first) out += s.as_string();
                 out += text_of(item, "str.join");
                 first = false;
             }
             return Value(out);
         }},
        {"splitlines", [](const Value& s, CallArgs&) {
             std::vector<std::string> lines = split(s.as_string(), '\n');
             if (!lines.empty() && lines.back().empty()) lines.pop_back();
             for (auto& l : lines)
                 if (!l.empty() && l.back() == '\r') l.pop_back();
             return string_list(lines);
         }},
        {"isdigit", [](const Value& s, CallArgs&) {
             const std::string& t = s.as_string();
             return Value(!t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }));
         }},
    };
    auto it = methods.find(name);
    if (it == methods.end()) return Value::undefined("str." + name);
    return bound(self, "str." + name, it->second);
}

Value dict_method(const Value& self, const std::string& name) {
    if (name == "items")
        return bound(self, name, [](const Value& d, CallArgs&) {
            List pairs;
            for (const auto& [k, v] : d.as_dict()) pairs.push_back(Value::list({Value(k), v}));
            return Value::list(std::move(pairs));
        });
    if (name == "keys")
        return bound(self, name, [](const Value& d, CallArgs&) { return Value::list(items_of(d, "keys")); });
    if (name == "values")
        return bound(self, name, [](const Value& d, CallArgs&) {
            List values;
            for (const auto& [k, v] : d.as_dict()) values.push_back(v);
            return Value::list(std::move(values));
        });
    if (name == "get")
        return bound(self, name, [](const Value& d, CallArgs& a) {
            const Value key = argument(a, 0, "key", Value::none());
            const Value* found = key.is_string() ? d.find(key.as_string()) : nullptr;
            return found ? *found : argument(a, 1, "default", Value::none());
        });
    return Value::undefined(name);
}

const std::vector<std::string>& mutating_methods() {
    static const std::vector<std::string> names = {"append", "extend", "insert", "pop", "remove", "clear", "update",
                                                   "setdefault", "sort", "reverse", "popitem"};
    return names;
}

// The other methods Python's str, dict and list have: `x.name is defined` holds for them, as it
// does in jinja2, and calling one says that ftlaunch does not render it.
bool is_python_method(const Value& obj, const std::string& name) {
    static const std::vector<std::string> str_methods = {
        "casefold", "center", "encode", "expandtabs", "format", "format_map", "index", "isalnum", "isalpha",
        "isascii", "isdecimal", "isidentifier", "isnumeric", "isprintable", "isspace", "istitle", "ljust", "maketrans", "partition", "removeprefix", "removesuffix", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "swapcase", "translate", "zfill"};
    static const std::vector<std::string> dict_methods = {"copy", "fromkeys"};
    static const std::vector<std::string> list_methods = {"copy", "count", "index"};
    const auto& names = obj.is_string() ? str_methods : obj.kind() == Value::Kind::kDict ? dict_methods : list_methods;
    return (obj.is_string() || obj.kind() == Value::Kind::kDict || obj.kind() == Value::Kind::kList) &&
           std::find(names.begin(), names.end(), name) != names.end();
}

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
    static const char* hex = "0123456789abcdef";
    auto escape_unit = [&](uint32_t u) {
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4) out += hex[(u >> shift) & 15];
    };
    out += '"';
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (c == '\b') out += "\\b";
        else if (c == '\f') out += "\\f";
        else if (c < 0x20) escape_unit(c);
        else if (c < 0x80 || !ensure_ascii) {
            out += static_cast<char>(c);
        } else {
            const size_t n = std::max<size_t>(1, valid_utf8_sequence(s, i));
            uint32_t cp = n == 1 ? c : c & (0xFF >> (n + 1));
            for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                escape_unit(0xD800 + (cp >> 10));
                escape_unit(0xDC00 + (cp & 0x3FF));
            } else {
                escape_unit(cp);
            }
            i += n;
            continue;
        }
        ++i;
    }
    out += '"';
}

void json_value(std::string& out, const Value& v, bool ensure_ascii, int indent, const std::string& item_sep,
                const std::string& key_sep, bool sort_keys, int level) {
    auto newline = [&](int depth) {
        if (indent < 0) return;
        out += '\n';
        out += std::string(static_cast<size_t>(indent * depth), ' ');
    };
    switch (v.kind()) {
        case Value::Kind::kNone: out += "null"; return;
        case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return;
        case Value::Kind::kInt: out += std::to_string(v.as_int()); return;
        case Value::Kind::kFloat: {
            const double d = v.as_float();
            out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : python_float(d);
            return;
        }
        case Value::Kind::kString: json_string(out, v.as_string(), ensure_ascii); return;
        case Value::Kind::kList: {
            if (v.as_list().empty()) {
                out += "[]";
                return;
            }
            out += '[';
            bool first = true;
            for (const Value& item : v.as_list()) {
                if (!first) out += item_sep;
                newline(level + 1);
                json_value(out, item, ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
                first = false;
            }
            newline(level);
            out += ']';
            return;
        }
        case Value::Kind::kDict: {
            if (v.as_dict().empty()) {
                out += "{}";
                return;
            }
            std::vector<const std::pair<std::string, Value>*> entries;
            for (const auto& entry : v.as_dict()) entries.push_back(&entry);
            if (sort_keys)
                std::stable_sort(entries.begin(), entries.end(), [](auto* a, auto* b) { return a->first < b->first; });
            out += '{';
            bool first = true;
            for (const auto* entry : entries) {
                if (!first) out += item_sep;
                newline(level + 1);
                json_string(out, entry->first, ensure_ascii);
                out += key_sep;
                json_value(out, entry->second, ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
                first = false;
            }
            newline(level);
            out += '}';
            return;
        }
        default: raise("tojson: a " + v.type_name() + " is not JSON serializable");
    }
}

}  // namespace

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

Value argument(CallArgs& args, size_t position, const std::string& name, Value fallback) {
    if (position < args.positional.size()) return args.positional[position];
    for (const auto& [key, value] : args.keyword)
        if (key == name) return value;
    return fallback;
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

Value get_attribute(const Value& obj, const std::string& name) {
    if (obj.is_undefined()) raise("'" + obj.name() + "' is undefined (reading ." + name + ")");
    if (std::find(mutating_methods().begin(), mutating_methods().end(), name) != mutating_methods().end() &&
        (obj.kind() == Value::Kind::kList || obj.kind() == Value::Kind::kDict))
        return Value::function(name, [name](CallArgs&) -> Value {
            raise("the template calls ." + name + "(), which changes a value; chat templates render in an immutable "
                  "sandbox, where transformers refuses it too");
        });
    if (is_python_method(obj, name))
        return Value::function(name, [name, type = obj.type_name()](CallArgs&) -> Value {
            raise("the template calls " + type + "." + name + "(), a Python method ftlaunch's renderer does not have");
        });
    switch (obj.kind()) {
        case Value::Kind::kString: return string_method(obj, name);
        case Value::Kind::kDict: {
            Value method = dict_method(obj, name);
            if (!method.is_undefined()) return method;
            const Value* found = obj.find(name);
            return found ? *found : Value::undefined(name);
        }
        case Value::Kind::kNamespace: {
            const Value* found = obj.find(name);
            return found ? *found : Value::undefined(name);
        }
        default: return Value::undefined(name);
    }
}

Value get_item(const Value& obj, const Value& key) {
    if (obj.is_undefined()) raise("'" + obj.name() + "' is undefined (reading [" + key.repr() + "])");
    if (obj.is_mapping() && key.is_string()) {
        const Value* found = obj.find(key.as_string());
        if (found) return *found;
    }
    if ((obj.kind() == Value::Kind::kList || obj.is_string()) &&
        (key.kind() == Value::Kind::kInt || key.kind() == Value::Kind::kBool)) {
        const List items = obj.is_string() ? items_of(obj, "index") : List{};
        const List& seq = obj.is_string() ? items : obj.as_list();
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(seq.size());
        if (i >= 0 && i < static_cast<int64_t>(seq.size())) return seq[static_cast<size_t>(i)];
        return Value::undefined("[" + key.repr() + "]");
    }
    if (key.is_string() && !obj.is_mapping()) return get_attribute(obj, key.as_string());
    return Value::undefined(key.str());
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step) {
    if (obj.kind() != Value::Kind::kList && !obj.is_string()) raise("cannot slice a " + obj.type_name());
    const List items = obj.is_string() ? items_of(obj, "slice") : obj.as_list();
    const int64_t n = static_cast<int64_t>(items.size());
    auto given = [](const Value* v) { return v && !v->is_none() && !v->is_undefined(); };
    const int64_t by = given(step) ? int_of(*step, "slice step") : 1;
    if (by == 0) raise("slice step cannot be zero");
    auto clamp = [&](const Value* v, int64_t fallback) {
        if (!given(v)) return fallback;
        int64_t i = int_of(*v, "slice index");
        if (i < 0) i += n;
        if (by > 0) return std::clamp<int64_t>(i, 0, n);
        return std::clamp<int64_t>(i, -1, n - 1);
    };
    const int64_t from = clamp(start, by > 0 ? 0 : n - 1);
    const int64_t to = clamp(stop, by > 0 ? n : -1);
    List out;
    for (int64_t i = from; by > 0 ? i < to : i > to;) {
        out.push_back(items[static_cast<size_t>(i)]);
        if (__builtin_add_overflow(i, by, &i)) break;
    }
    if (!obj.is_string()) return Value::list(std::move(out));
    std::string text;
    for (const Value& cp : out) text += cp.as_string();
    return Value(text);
}

std::string to_json(const Value& value, bool ensure_ascii, int indent, const std::string& item_separator,
                    const std::string& key_separator, bool sort_keys) {
    std::string out;
    json_value(out, value, ensure_ascii, indent, item_separator, key_separator, sort_keys, 0);
    return out;
}

// Tests ---------------------------------------------------------------------------------------

bool has_test(const std::string& name) {
    static const std::vector<std::string> names = {
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false", "mapping",
        "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt",
        "lessthan", "gt", "greaterthan", "le", "ge", "in", "lower", "upper", "sameas"};
    return std::find(names.begin(), names.end(), name) != names.end();
}

namespace {

double number_of(const Value& v, const std::string& what) {
    if (!v.is_number()) raise(what + " needs a number, got " + v.type_name());
    return v.as_float();
}

bool less(const Value& a, const Value& b) {
    if (a.is_number() && b.is_number()) return a.as_float() < b.as_float();
    if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
    raise("cannot order a " + a.type_name() + " and a " + b.type_name());
}

}  // namespace

bool apply_test(const std::string& name, const Value& v, CallArgs& args) {
    const Value other = argument(args, 0, "value", Value::none());
    using K = Value::Kind;
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "string") return v.is_string();
    if (name == "number") return v.kind() == K::kInt || v.kind() == K::kFloat;
    if (name == "integer") return v.kind() == K::kInt;
    if (name == "float") return v.kind() == K::kFloat;
    if (name == "boolean") return v.kind() == K::kBool;
    if (name == "true") return v.kind() == K::kBool && v.as_bool();
    if (name == "false") return v.kind() == K::kBool && !v.as_bool();
    if (name == "mapping") return v.kind() == K::kDict;
    if (name == "iterable") return v.kind() == K::kList || v.kind() == K::kDict || v.is_string() || v.is_undefined();
    if (name == "sequence") return v.kind() == K::kList || v.kind() == K::kDict || v.is_string() || v.is_undefined();
    if (name == "callable") return v.kind() == K::kFunction;
    if (name == "odd") return int_of(v, "odd") % 2 != 0;
    if (name == "even") return int_of(v, "even") % 2 == 0;
    if (name == "divisibleby") {
        const int64_t d = int_of(other, "divisibleby");
        if (d == 0) raise("divisibleby(0): division by zero");
        return d == -1 || int_of(v, "divisibleby") % d == 0;
    }
    if (name == "eq" || name == "equalto" || name == "==") return equal(v, other);
    if (name == "ne" || name == "!=") return !equal(v, other);
    if (name == "lt" || name == "lessthan") return less(v, other);
    if (name == "gt" || name == "greaterthan") return less(other, v);
    if (name == "le") return !less(other, v);
    if (name == "ge") return !less(v, other);
    if (name == "in") {
        if (other.is_string()) return v.is_string() && other.as_string().find(v.as_string()) != std::string::npos;
        for (const Value& item : items_of(other, "in")) if (equal(item, v)) return true;
        return false;
    }
    if (name == "lower") return all_cased_as(v.str(), Case::kLower);
    if (name == "upper") return all_cased_as(v.str(), Case::kUpper);
    if (name == "sameas") return v.kind() == other.kind() && (v.is_none() || equal(v, other));
    raise("unknown test '" + name + "'");
}

// Filters -------------------------------------------------------------------------------------

bool has_filter(const std::string& name) {
    static const std::vector<std::string> names = {
        "trim", "length", "count", "tojson", "upper", "lower", "title", "capitalize", "default", "d", "first", "last",
        "join", "replace", "string", "int", "float", "list", "items", "selectattr", "rejectattr", "select", "reject",
        "map", "reverse", "sort", "unique", "abs", "round", "safe", "e", "escape", "indent", "wordcount", "center",
        "min", "max", "sum", "dictsort"};
    return std::find(names.begin(), names.end(), name) != names.end();
}

namespace {

// select/reject/selectattr/rejectattr: keep items whose (attribute's) test result is `keep`.
Value filter_items(const Value& input, CallArgs& args, bool by_attribute, bool keep) {
    CallArgs rest;
    size_t first = 0;
    std::string attribute;
    if (by_attribute) attribute = text_of(argument(args, first++, "attribute", Value::none()), "selectattr");
    const Value test = argument(args, first, "test", Value::none());
    rest.positional.assign(args.positional.begin() + static_cast<long>(std::min(args.positional.size(), first + 1)),
                           args.positional.end());
    List out;
    for (const Value& item : items_of(input, "select")) {
        const Value subject = by_attribute ? get_attribute(item, attribute) : item;
        const bool passes = test.is_none() ? subject.truthy() : apply_test(text_of(test, "select"), subject, rest);
        if (passes == keep) out.push_back(item);
    }
    return Value::list(std::move(out));
}

std::string sort_key_text(const Value& v) { return change_case(v.str(), Case::kLower); }

}  // namespace

Value apply_filter(const std::string& name, const Value& input, CallArgs& args) {
    using K = Value::Kind;
    if (name == "safe") return input;
    if (name == "default" || name == "d") {
        const bool boolean = argument(args, 1, "boolean", Value(false)).truthy();
        const bool use_fallback = input.is_undefined() || (boolean && !input.truthy());
        return use_fallback ? argument(args, 0, "default_value", Value("")) : input;
    }
    if (name == "tojson") {
        const Value indent = argument(args, 1, "indent", Value::none());
        const Value separators = argument(args, 2, "separators", Value::none());
        const int width = indent.is_none() ? -1 : static_cast<int>(int_of(indent, "tojson indent"));
        std::string item_sep = width < 0 ? ", " : ",";
        std::string key_sep = ": ";
        if (separators.kind() == K::kList && separators.as_list().size() == 2) {
            item_sep = text_of(separators.as_list()[0], "tojson separators");
            key_sep = text_of(separators.as_list()[1], "tojson separators");
        }
        return Value(to_json(input, argument(args, 0, "ensure_ascii", Value(false)).truthy(), width, item_sep, key_sep,
                             argument(args, 3, "sort_keys", Value(false)).truthy()));
    }
    if (name == "string") return Value(input.str());
    if (name == "length" || name == "count") {
        if (input.is_string()) return Value(static_cast<int64_t>(code_points(input.as_string()).size()));
        if (input.kind() == K::kList) return Value(static_cast<int64_t>(input.as_list().size()));
        if (input.is_mapping()) return Value(static_cast<int64_t>(input.as_dict().size()));
        if (input.is_undefined()) return Value(0);
        raise("length: a " + input.type_name() + " has no length");
    }
    if (name == "trim") return Value(strip(input.str(), argument(args, 0, "chars", Value::none()), 3));
    if (name == "upper") return Value(change_case(input.str(), Case::kUpper));
    if (name == "lower") return Value(change_case(input.str(), Case::kLower));
    if (name == "title") return Value(title(input.str()));
    if (name == "capitalize") return Value(capitalize(input.str()));
    if (name == "replace")
        return Value(replace_all(input.str(), argument(args, 0, "old", Value("")).str(), argument(args, 1, "new", Value("")).str(),
                                 int_of(argument(args, 2, "count", Value(-1)), "replace")));
    if (name == "e" || name == "escape") {
        std::string out;
        for (char c : input.str()) {
            switch (c) {
                case '&': out += "&amp;"; break;
                case '<': out += "&lt;"; break;
                case '>': out += "&gt;"; break;
                case '"': out += "&#34;"; break;
                case '\'': out += "&#39;"; break;
                default: out += c;
            }
        }
        return Value(out);
    }
    if (name == "first" || name == "last") {
        const List items = items_of(input, name);
        if (items.empty()) return Value::undefined(name);
        return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
        const std::string separator = argument(args, 0, "d", Value("")).str();
        const Value attribute = argument(args, 1, "attribute", Value::none());
        std::vector<std::string> parts;
        for (const Value& item : items_of(input, "join"))
            parts.push_back(attribute.is_none() ? item.str() : get_attribute(item, attribute.str()).str());
        return Value(join(parts, separator));
    }
    if (name == "int") {
        if (input.is_number()) return Value(input.as_int());
        if (input.is_string()) {
            if (auto i = parse_int(trim(input.as_string()))) return Value(static_cast<int64_t>(*i));
            if (auto d = parse_double(trim(input.as_string()))) return Value(static_cast<int64_t>(*d));
        }
        return argument(args, 0, "default", Value(0));
    }
    if (name == "float") {
        if (input.is_number()) return Value(input.as_float());
        if (input.is_string())
            if (auto d = parse_double(trim(input.as_string()))) return Value(*d);
        return argument(args, 0, "default", Value(0.0));
    }
    if (name == "list") return Value::list(items_of(input, "list"));
    if (name == "items") {
        if (input.is_undefined()) return Value::list({});
        if (!input.is_mapping()) raise("items: needs a mapping, got " + input.type_name());
        CallArgs none;
        return get_attribute(input, "items").as_function()(none);
    }
    if (name == "dictsort") {
        if (!input.is_mapping()) raise("dictsort: needs a mapping, got " + input.type_name());
        Dict entries = input.as_dict();
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) {
                             return change_case(a.first, Case::kLower) < change_case(b.first, Case::kLower);
                         });
        List pairs;
        for (auto& [k, v] : entries) pairs.push_back(Value::list({Value(k), v}));
        return Value::list(std::move(pairs));
    }
    if (name == "selectattr" || name == "rejectattr") return filter_items(input, args, true, name == "selectattr");
    if (name == "select" || name == "reject") return filter_items(input, args, false, name == "select");
    if (name == "map") {
        const Value attribute = argument(args, 99, "attribute", Value::none());
        List out;
        if (!attribute.is_none()) {
            const Value fallback = argument(args, 99, "default", Value::undefined(attribute.str()));
            for (const Value& item : items_of(input, "map")) {
                Value v = get_attribute(item, attribute.str());
                out.push_back(v.is_undefined() ? fallback : v);
            }
            return Value::list(std::move(out));
        }
        const std::string filter = text_of(argument(args, 0, "filter", Value::none()), "map");
        CallArgs rest;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        rest.keyword = args.keyword;
        for (const Value& item : items_of(input, "map")) out.push_back(apply_filter(filter, item, rest));
        return Value::list(std::move(out));
    }
    if (name == "reverse") {
        if (input.is_string()) {
            const Value step(-1);
            return get_slice(input, nullptr, nullptr, &step);
        }
        List items = items_of(input, "reverse");
        std::reverse(items.begin(), items.end());
        return Value::list(std::move(items));
    }
    if (name == "sort") {
        List items = items_of(input, "sort");
        const bool reverse = argument(args, 0, "reverse", Value(false)).truthy();
        const bool case_sensitive = argument(args, 1, "case_sensitive", Value(false)).truthy();
        const Value attribute = argument(args, 2, "attribute", Value::none());
        auto key = [&](const Value& v) { return attribute.is_none() ? v : get_attribute(v, attribute.str()); };
        std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
            const Value ka = key(a), kb = key(b);
            const bool lt = !case_sensitive && ka.is_string() && kb.is_string() ? sort_key_text(ka) < sort_key_text(kb)
                                                                                : less(ka, kb);
            const bool gt = !case_sensitive && ka.is_string() && kb.is_string() ? sort_key_text(kb) < sort_key_text(ka)
                                                                                : less(kb, ka);
            return reverse ? gt : lt;
        });
        return Value::list(std::move(items));
    }
    if (name == "unique") {
        List out;
        for (const Value& item : items_of(input, "unique")) {
            bool seen = false;
            for (const Value& o : out) seen = seen || equal(o, item);
            if (!seen) out.push_back(item);
        }
        return Value::list(std::move(out));
    }
    if (name == "min" || name == "max" || name == "sum") {
        const List items = items_of(input, name);
        if (name == "sum") {
            Value total = argument(args, 1, "start", Value(0));
            for (const Value& item : items) {
                const bool floats = total.kind() == K::kFloat || item.kind() == K::kFloat;
                total = floats ? Value(number_of(total, "sum") + number_of(item, "sum"))
                               : Value(checked_add(int_of(total, "sum"), int_of(item, "sum")));
            }
            return total;
        }
        if (items.empty()) return Value::undefined(name);
        Value best = items.front();
        for (const Value& item : items)
            if (name == "min" ? less(item, best) : less(best, item)) best = item;
        return best;
    }
    if (name == "abs") {
        if (input.kind() == K::kFloat) return Value(std::fabs(input.as_float()));
        const int64_t i = int_of(input, "abs");
        return Value(i < 0 ? checked_mul(i, -1) : i);
    }
    if (name == "round") {
        const int64_t precision = int_of(argument(args, 0, "precision", Value(0)), "round");
        const std::string method = argument(args, 1, "method", Value("common")).str();
        const double scale = std::pow(10.0, static_cast<double>(precision));
        const double x = number_of(input, "round") * scale;
        const double r = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::round(x);
        return Value(r / scale);
    }
    if (name == "indent") {
        const Value width_value = argument(args, 0, "width", Value(4));
        const int64_t width = width_value.is_string() ? 0 : int_of(width_value, "indent");
        if (width < 0) raise("indent: a negative width");
        check_size(static_cast<size_t>(width));
        const std::string pad = width_value.is_string() ? width_value.as_string() : std::string(static_cast<size_t>(width), ' ');
        const bool first = argument(args, 1, "first", Value(false)).truthy();
        const bool blank = argument(args, 2, "blank", Value(false)).truthy();
        std::vector<std::string> lines = split(input.str(), '\n');
        std::string out;
        for (size_t i = 0; i < lines.size(); ++i) {
            if (i > 0) out += '\n';
            const bool indent_line = (i > 0 || first) && (blank || !trim(lines[i]).empty());
            out += (indent_line ? pad : "") + lines[i];
            check_size(out.size());
        }
        return Value(out);
    }
    if (name == "wordcount") return Value(static_cast<int64_t>(split_text(input.str(), Value::none(), -1).size()));
    if (name == "center") {
        const int64_t width = int_of(argument(args, 0, "width", Value(80)), "center");
        const std::string s = input.str();
        const int64_t len = static_cast<int64_t>(code_points(s).size());
        if (len >= width) return Value(s);
        check_size(static_cast<size_t>(width));
        const int64_t total = width - len;
        const int64_t left = total / 2 + (total & width & 1);  // Python's str.center rounding
        return Value(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(total - left), ' '));
    }
    raise("unknown filter '" + name + "'");
}

}  // namespace ftl::jinja
