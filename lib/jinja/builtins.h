// What a chat template can call, shared inside jinja/: jinja2's filters and tests and
// transformers' tojson (filters.cpp), attribute and item lookup and the str/dict methods the
// sandbox allows (lookup.cpp; no mutation: transformers renders in an ImmutableSandboxedEnvironment),
// and Python's semantics for text, arguments and integers (python.cpp).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "jinja/value.h"

namespace ftl::jinja {

// A rendering error without its place; the renderer adds the template's name and line.
class RenderError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Throws RenderError(message).
[[noreturn]] void raise(const std::string& message);

// Values as arguments: a str, an int (bool counts, as in Python), or the items a for loop or
// filter walks (a list's items, a dict's keys, a str's code points; none for undefined). Each
// throws naming `what` for another type.
const std::string& text_of(const Value& v, const std::string& what);
int64_t int_of(const Value& v, const std::string& what);
List items_of(const Value& v, const std::string& what);

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
// The keyword argument `name` (a keyword-only parameter), or `fallback`.
Value keyword_argument(CallArgs& args, const std::string& name, Value fallback);

// Python's str methods on UTF-8 text (python.cpp). strip(chars) family: side 1 = left, 2 =
// right, 3 = both; chars none: whitespace (Python's str.isspace, Unicode's).
bool is_python_space(const std::string& code_point);
std::string strip(const std::string& s, const Value& chars, int side);
// str.split(separator, max_splits): separator none splits at whitespace runs; max_splits < 0: all.
std::vector<std::string> split_text(const std::string& s, const Value& separator, int64_t max_splits);
// str.replace(from, to, count); count < 0: all.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count);

// Letter case per code point as Python maps it (utf8proc's mappings beyond ASCII); a letter whose
// Python mapping is a special case (ß, ligatures, final sigma) is refused.
enum class Case { kUpper, kLower, kTitle };
std::string change_case(const std::string& s, Case c);
// str.islower() / isupper(): some cased letter, none in the other case.
bool all_cased_as(const std::string& s, Case c);
std::string capitalize(const std::string& s);  // str.capitalize
std::string title(const std::string& s);       // jinja2's title filter

}  // namespace ftl::jinja
