// A Jinja chat template, rendered as transformers' apply_chat_template renders it: jinja2 3.1
// in an ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, loop controls, the
// globals raise_exception, strftime_now, namespace, dict and range, transformers' tojson filter,
// and its {% generation %} tag, whose output spans say what an assistant wrote
// (return_assistant_tokens_mask).
//
// Supported: the statements and expressions listed in parser.h; the filters, tests and methods
// in builtins.h. Outside that (call blocks, includes, extends, recursive loops, %-formatting,
// the letters whose Python case mapping is a special case: ß, ligatures, final sigma) parsing or
// rendering throws an error naming the template and line, never a guess.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja/value.h"

namespace ftl::jinja {

struct Stmt;

struct Rendered {
    std::string text;
    // [begin, end) byte ranges of `text` written inside {% generation %} blocks, in order.
    std::vector<std::pair<size_t, size_t>> generation_spans;
};

class Template {
public:
    // Throws ftl::Error(kConfig) naming `where` (e.g. "model/tokenizer_config.json: chat_template")
    // and the line of a syntax error or an unknown filter, test or tag.
    static Template parse(const std::string& source, std::string where);

    // Renders with `variables` (name -> value) on top of the globals. Throws ftl::Error(kConfig)
    // naming the template and line for an error while rendering, including raise_exception's
    // message, and for a template that runs more than `step_limit` steps (statements, loop
    // iterations and expressions evaluated: a chat template takes thousands, a runaway loop would hang the job).
    Rendered render(const Dict& variables, uint64_t step_limit = 50'000'000) const;

    // Whether the source has a {% generation %} block (transformers' check for assistant masks).
    bool has_generation() const { return has_generation_; }

private:
    std::shared_ptr<const std::vector<std::unique_ptr<Stmt>>> body_;
    std::string where_;
    bool has_generation_ = false;
};

}  // namespace ftl::jinja
