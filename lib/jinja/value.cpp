#include "jinja/value.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "util/strings.h"

namespace ftl::jinja {

Value Value::undefined(std::string name) {
    Value v;
    v.name_ = std::move(name);
    return v;
}

Value Value::none() {
    Value v;
    v.kind_ = Kind::kNone;
    return v;
}

Value::Value(bool b) : kind_(Kind::kBool), int_(b ? 1 : 0) {}
Value::Value(int64_t i) : kind_(Kind::kInt), int_(i) {}
Value::Value(double d) : kind_(Kind::kFloat), float_(d) {}
Value::Value(std::string s) : kind_(Kind::kString), string_(std::make_shared<const std::string>(std::move(s))) {}

Value Value::list(List items) {
    Value v;
    v.kind_ = Kind::kList;
    v.list_ = std::make_shared<const List>(std::move(items));
    return v;
}

Value Value::dict(Dict items) {
    Value v;
    v.kind_ = Kind::kDict;
    v.dict_ = std::make_shared<Dict>(std::move(items));
    return v;
}

Value Value::name_space(Dict items) {
    Value v = dict(std::move(items));
    v.kind_ = Kind::kNamespace;
    return v;
}

Value Value::function(std::string name, Function f) {
    Value v;
    v.kind_ = Kind::kFunction;
    v.name_ = std::move(name);
    v.function_ = std::make_shared<const Function>(std::move(f));
    return v;
}

namespace {

template <class Json>
Value value_of(const Json& j) {

    switch (j.type()) {
        case Json::value_t::null: return Value::none();
        case Json::value_t::boolean: return Value(j.template get<bool>());
        case Json::value_t::number_integer: return Value(j.template get<int64_t>());
        case Json::value_t::number_unsigned: return Value(static_cast<int64_t>(j.template get<uint64_t>()));
        case Json::value_t::number_float: return Value(j.template get<double>());
        case Json::value_t::string: return Value(j.template get<std::string>());
        case Json::value_t::array: {
            List items;
            for (const auto& e : j) items.push_back(value_of(e));
            return Value::list(std::move(items));
        }
        case Json::value_t::object: {
            Dict items;
            for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(it.key(), value_of(it.value()));
            return Value::dict(std::move(items));
        }
        default: return Value::undefined("binary");
    }
}

}  // namespace

Value Value::from_json(const nlohmann::json& j) { return value_of(j); }
Value Value::from_json(const nlohmann::ordered_json& j) { return value_of(j); }

bool Value::truthy() const {
    switch (kind_) {
        case Kind::kUndefined:
        case Kind::kNone: return false;
        case Kind::kBool: return int_ != 0;
        case Kind::kInt: return int_ != 0;
        case Kind::kFloat: return float_ != 0;
        case Kind::kString: return !string_->empty();
        case Kind::kList: return !list_->empty();
        case Kind::kDict: return !dict_->empty();
        default: return true;
    }
}

std::string python_float(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    char buf[64];
    auto result = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    std::string sci(buf, result.ptr);  // "-d.ddde+XX"
    const size_t e = sci.find('e');
    const int exponent = std::atoi(sci.c_str() + e + 1);
    std::string sign;
    std::string digits;
    for (size_t i = 0; i < e; ++i) {
        if (sci[i] == '-') sign = "-";
        else if (sci[i] != '.') digits.push_back(sci[i]);
    }
    if (exponent >= -4 && exponent < 16) {
        std::string out;
        if (exponent < 0) {
            out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
        } else if (digits.size() > static_cast<size_t>(exponent) + 1) {
            out = digits.substr(0, static_cast<size_t>(exponent) + 1) + "." + digits.substr(static_cast<size_t>(exponent) + 1);
        } else {
            out = digits + std::string(static_cast<size_t>(exponent) + 1 - digits.size(), '0') + ".0";
        }
        return sign + out;
    }
    std::string mantissa = digits.substr(0, 1);
    if (digits.size() > 1) mantissa += "." + digits.substr(1);
    const std::string exp_digits = std::to_string(std::abs(exponent));
    return sign + mantissa + (exponent < 0 ? "e-" : "e+") + (exp_digits.size() < 2 ? "0" : "") + exp_digits;
}

std::string Value::str() const {
    switch (kind_) {
        case Kind::kUndefined: return "";
        case Kind::kString: return *string_;
        default: return repr();
    }
}

namespace {

// Python's repr of a str: single quotes unless the text has ' and no ".
std::string quote(const std::string& s) {
    const char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, q);
    for (unsigned char c : s) {
        if (c == q || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            static const char* hex = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + q;
}

}  // namespace

std::string Value::repr() const {
    switch (kind_) {
        case Kind::kUndefined: return "";
        case Kind::kNone: return "None";
        case Kind::kBool: return int_ != 0 ? "True" : "False";
        case Kind::kInt: return std::to_string(int_);
        case Kind::kFloat: return python_float(float_);
        case Kind::kString: return quote(*string_);
        case Kind::kList: {
            std::vector<std::string> parts;
            for (const Value& v : *list_) parts.push_back(v.repr());
            return "[" + join(parts, ", ") + "]";
        }
        case Kind::kDict:
        case Kind::kNamespace: {
            std::vector<std::string> parts;
            for (const auto& [k, v] : *dict_) parts.push_back(quote(k) + ": " + v.repr());
            return (kind_ == Kind::kNamespace ? "<Namespace {" : "{") + join(parts, ", ") +
                   (kind_ == Kind::kNamespace ? "}>" : "}");
        }
        case Kind::kFunction: return "<function " + name_ + ">";
    }
    return "";
}

const Value* Value::find(const std::string& key) const {
    if (!is_mapping()) return nullptr;
    for (const auto& [k, v] : *dict_)
        if (k == key) return &v;
    return nullptr;
}

std::string Value::type_name() const {
    switch (kind_) {
        case Kind::kUndefined: return "undefined";
        case Kind::kNone: return "None";
        case Kind::kBool: return "bool";
        case Kind::kInt: return "int";
        case Kind::kFloat: return "float";
        case Kind::kString: return "string";
        case Kind::kList: return "list";
        case Kind::kDict: return "dict";
        case Kind::kNamespace: return "namespace";
        case Kind::kFunction: return "function";
    }
    return "value";
}

bool equal(const Value& a, const Value& b) {
    if (a.is_number() && b.is_number()) {
        if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) return a.as_float() == b.as_float();
        return a.as_int() == b.as_int();
    }
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
        case Value::Kind::kUndefined:
        case Value::Kind::kNone: return true;
        case Value::Kind::kString: return a.as_string() == b.as_string();
        case Value::Kind::kList: {
            if (a.as_list().size() != b.as_list().size()) return false;
            for (size_t i = 0; i < a.as_list().size(); ++i)
                if (!equal(a.as_list()[i], b.as_list()[i])) return false;
            return true;
        }
        case Value::Kind::kDict: {
            if (a.as_dict().size() != b.as_dict().size()) return false;
            for (const auto& [k, v] : a.as_dict()) {
                const Value* other = b.find(k);
                if (!other || !equal(v, *other)) return false;
            }
            return true;
        }
        case Value::Kind::kNamespace: return &a.as_dict() == &b.as_dict();
        default: return false;
    }
}

std::vector<std::string> code_points(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
        const size_t n = std::max<size_t>(1, valid_utf8_sequence(s, i));
        out.push_back(s.substr(i, n));
        i += n;
    }
    return out;
}

}  // namespace ftl::jinja
