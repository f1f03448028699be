// Jinja template text -> tokens, as jinja2's lexer cuts it in the environment transformers
// compiles chat templates with (trim_blocks=True, lstrip_blocks=True):
//   - text outside tags is kept verbatim (newlines read as "\n", one at the very end dropped),
//     except that
//   - "{%-" / "{{-" / "{#-" strip all whitespace before the tag, "-%}" / "-}}" / "-#}" all after;
//   - lstrip_blocks: spaces and tabs between a line's start and a "{%" or "{#" are dropped
//     ("{%+" keeps them);
//   - trim_blocks: one newline right after "%}" or "#}" is dropped ("+%}" keeps it);
//   - comments vanish; "{% raw %}...{% endraw %}" is text.
// Inside tags: names, numbers, strings (Python escapes), operators; "}}" and "%}" end a tag only
// outside brackets, as jinja2 balances them.
#pragma once

#include <string>
#include <vector>

namespace ftl::jinja {

struct Token {
    enum class Type { kText, kBlockBegin, kBlockEnd, kVarBegin, kVarEnd, kName, kString, kInt, kFloat, kOperator, kEnd };
    Type type;
    std::string text;  // text, name, operator, the unescaped string, or the number's digits
    int line = 1;
};

// Throws ftl::Error(kConfig) naming `where` and the line for an unterminated tag, comment or
// string, or a character that starts no token.
std::vector<Token> lex(const std::string& source, const std::string& where);

}  // namespace ftl::jinja
