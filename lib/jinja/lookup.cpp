// Attribute, item and slice lookup as jinja2's sandbox does it, and the methods of str and dict
// a template may call.
#include <algorithm>
#include <functional>
#include <map>

#include "jinja/builtins.h"
#include "util/strings.h"

namespace ftl::jinja {
namespace {

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

}  // namespace

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

}  // namespace ftl::jinja
