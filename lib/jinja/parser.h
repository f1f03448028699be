// Tokens -> a template's syntax tree: jinja2's grammar for what chat templates use.
//
// Statements: text, {{ expr }}, if/elif/else, for (with tuple targets, an `if` filter, else,
// and the loop variable), break/continue (jinja2.ext.loopcontrols), set (names, tuples,
// namespace attributes, and the {% set x %}...{% endset %} block), macro, and transformers'
// {% generation %}...{% endgeneration %}, which marks what an assistant wrote.
// Expressions, loosest first (jinja2's precedence): `a if c else b`, or, and, not, comparisons
// (== != < <= > >= in, not in), + -, ~, * / // %, **, unary - +, then postfix .attr [i] [a:b:c]
// (call) |filter and `is [not] test`.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja/lexer.h"
#include "jinja/value.h"

namespace ftl::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
    enum class Kind {
        kLiteral,      // literal
        kName,         // name
        kList,         // operands: items (tuples too)
        kDict,         // keyword: (key text unused) -- pairs in operands as key, value, key, value...
        kAttribute,    // operands[0].name
        kItem,         // operands[0][operands[1]]
        kSlice,        // operands[0][1:2:3], missing parts null
        kCall,         // operands[0](operands[1:], keyword)
        kFilter,       // operands[0] | name(operands[1:], keyword)
        kTest,         // operands[0] is [not] name(operands[1:])
        kNot,          // not operands[0]
        kNegate,       // -operands[0]
        kBinary,       // operands[0] name operands[1]: + - * / // % ** ~
        kAnd,          // operands[0] and operands[1]
        kOr,           // operands[0] or operands[1]
        kCompare,      // operands[0] comparisons[0] operands[1] comparisons[1] operands[2] ...
        kConditional,  // operands[0] if operands[1] else operands[2] (null: undefined)
    };
    Kind kind;
    int line = 0;
    Value literal;
    std::string name;
    bool negated = false;
    std::vector<ExprPtr> operands;
    std::vector<std::pair<std::string, ExprPtr>> keyword;
    std::vector<std::string> comparisons;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
    enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kGeneration, kBreak, kContinue };
    Kind kind;
    int line = 0;
    std::string text;                  // kText
    ExprPtr expr;                      // kOutput, kFor's iterable, kSet's value
    ExprPtr condition;                 // kFor's `if` filter
    std::vector<std::string> targets;  // kFor / kSet / kSetBlock names; kMacro: its name
    std::string attribute;             // kSet: `set targets[0].attribute = ...`
    std::vector<std::pair<ExprPtr, Body>> branches;  // kIf: if and elif, in order
    Body body;                                       // kFor, kSetBlock, kMacro, kGeneration
    Body else_body;                                  // kIf, kFor
    std::vector<std::pair<std::string, ExprPtr>> parameters;  // kMacro: name, default (or null)
};

// Throws ftl::Error(kConfig) naming `where`, the line and what was expected.
Body parse(const std::vector<Token>& tokens, const std::string& where);

}  // namespace ftl::jinja
