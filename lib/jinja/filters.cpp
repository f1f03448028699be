// jinja2's filters and tests, and transformers' tojson (Python's json.dumps).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "jinja/builtins.h"
#include "util/strings.h"

namespace ftl::jinja {
namespace {

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
        const Value attribute = keyword_argument(args, "attribute", Value::none());
        List out;
        if (!attribute.is_none()) {
            const Value fallback = keyword_argument(args, "default", Value::undefined(attribute.str()));
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
