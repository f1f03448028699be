// What a chat template can call: jinja2's filters and tests, the Python methods of str, dict and
// list that the sandbox allows (no mutation: transformers renders in an ImmutableSandboxedEnvironment),
// attribute and item lookup as jinja2 does it, and transformers' tojson.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

#include "jinja/value.h"

namespace ftl::jinja {

// A rendering error without its place; the renderer adds the template's name and line.
class RenderError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Filters like map('trim') and select('string') apply another filter or test by name.
using FilterCall = std::function<Value(const std::string& name, const Value& input, CallArgs& args)>;

// `obj.name`: a method of a str, dict or list first (getattr), then the dict's key; undefined
// when neither exists. Throws on an undefined `obj`.
Value get_attribute(const Value& obj, const std::string& name);
// `obj[key]`: the item first (negative indices count from the end), then the attribute.
Value get_item(const Value& obj, const Value& key);
// `obj[start:stop:step]` of a list or str, Python's rules (null parts: the defaults).
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);

// jinja2's filter `name` applied to `input`; throws RenderError for an unknown filter.
Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
// jinja2's test `name`; throws RenderError for an unknown test.
bool apply_test(const std::string& name, const Value& input, CallArgs& args);
bool has_filter(const std::string& name);
bool has_test(const std::string& name);

// json.dumps(value, ensure_ascii, indent, separators, sort_keys) as Python writes it
// (transformers' tojson filter; indent < 0 means None).
std::string to_json(const Value& value, bool ensure_ascii, int indent, const std::string& item_separator,
                    const std::string& key_separator, bool sort_keys);

// A string or list a template builds is capped at 64 Mi bytes / items (a chat template builds a
// few KiB); beyond it RenderError, not an allocation that takes the machine's memory.
inline constexpr size_t kMaxBuilt = size_t{1} << 26;
void check_size(size_t n);

// Python's integers are unbounded; ftlaunch's are 64-bit: an overflowing result is RenderError.
int64_t checked_add(int64_t a, int64_t b);
int64_t checked_mul(int64_t a, int64_t b);

// The positional or keyword argument `name` at `position` of a call, or `fallback`.
Value argument(CallArgs& args, size_t position, const std::string& name, Value fallback);

// Python's str.strip(chars) family: side 1 = left, 2 = right, 3 = both; no chars: whitespace.
std::string strip(const std::string& s, const Value& chars, int side);

}  // namespace ftl::jinja
