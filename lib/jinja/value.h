// The values a Jinja template computes with, modelled on the Python objects jinja2 hands a chat
// template (transformers' apply_chat_template passes plain JSON data: dicts, lists, strings,
// numbers, booleans, None), plus jinja2's Undefined, namespace() objects and callables (macros,
// globals such as range or raise_exception).
//
// Strings are UTF-8; lengths, indices and slices count code points, as Python's str does.
// Printing follows Python's str(): None -> "None", True -> "True", 1.0 -> "1.0", a list as its
// repr ("['a', 1]").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ftl::jinja {

class Value;
using List = std::vector<Value>;
// Python dicts keep insertion order; chat data only has string keys.
using Dict = std::vector<std::pair<std::string, Value>>;

// Positional and keyword arguments of a call, evaluated.
struct CallArgs {
    std::vector<Value> positional;
    std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<Value(CallArgs&)>;

class Value {
public:
    enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kFunction };

    Value() = default;  // undefined
    static Value undefined(std::string name);
    static Value none();
    Value(bool b);
    Value(int64_t i);
    Value(int i) : Value(static_cast<int64_t>(i)) {}
    Value(double d);
    Value(std::string s);
    Value(const char* s) : Value(std::string(s)) {}
    static Value list(List items);
    static Value dict(Dict items);
    static Value name_space(Dict items);  // jinja2's namespace(): attributes a `set` may change
    static Value function(std::string name, Function f);
    static Value from_json(const nlohmann::json& j);  // objects in key order (nlohmann sorts them)
    static Value from_json(const nlohmann::ordered_json& j);  // objects in the order read

    Kind kind() const { return kind_; }
    bool is_undefined() const { return kind_ == Kind::kUndefined; }
    bool is_none() const { return kind_ == Kind::kNone; }
    bool is_string() const { return kind_ == Kind::kString; }
    bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
    bool is_mapping() const { return kind_ == Kind::kDict || kind_ == Kind::kNamespace; }

    bool as_bool() const { return int_ != 0; }
    int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(float_) : int_; }
    double as_float() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
    const std::string& as_string() const { return *string_; }
    const List& as_list() const { return *list_; }
    const Dict& as_dict() const { return *dict_; }
    Dict& mutable_dict() const { return *dict_; }  // namespaces: `set ns.x = ...`
    const Function& as_function() const { return *function_; }
    const std::string& name() const { return name_; }  // an undefined's or a function's name

    // Python's bool(x) (Undefined is false).
    bool truthy() const;
    // Python's str(x); Undefined prints as "".
    std::string str() const;
    // Python's repr(x): strings quoted as Python quotes them.
    std::string repr() const;
    // The value at `key` of a dict or namespace, or nullptr.
    const Value* find(const std::string& key) const;
    // Kind in words, for errors ("string", "list", ...).
    std::string type_name() const;

private:
    Kind kind_ = Kind::kUndefined;
    int64_t int_ = 0;  // an int, or a bool as 0/1 (Python counts True as 1)
    double float_ = 0;
    std::string name_;
    std::shared_ptr<const std::string> string_;
    std::shared_ptr<const List> list_;
    std::shared_ptr<Dict> dict_;
    std::shared_ptr<const Function> function_;
};

// Python's ==, as jinja2 compares (1 == 1.0 == True; lists and dicts element by element).
bool equal(const Value& a, const Value& b);

// Python's repr of a float: the shortest digits that read back the same ("0.1", "1e-05", "1e+16",
// "inf", "nan").
std::string python_float(double d);

// Code points of UTF-8 text (invalid bytes taken one by one) and back.
std::vector<std::string> code_points(const std::string& s);

}  // namespace ftl::jinja
