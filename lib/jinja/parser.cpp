#include "jinja/parser.h"

#include <cstdlib>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::jinja {
namespace {

using Type = Token::Type;

class Parser {
public:
    Parser(const std::vector<Token>& tokens, const std::string& where) : tokens_(tokens), where_(where) {}

    Body parse_template() {
        Body body = parse_body({});
        if (peek().type != Type::kEnd) error("unexpected {% " + block_name() + " %}");
        return body;
    }

private:
    // Bounds the recursion (brackets, `not not ...`, nested blocks) so that a hostile template
    // is an error, not a stack overflow; real templates nest a few levels.
    struct Nesting {
        explicit Nesting(Parser& parser) : parser_(parser) {
            if (++parser_.depth_ > 200) parser_.error("the template nests more than 200 levels deep");
        }
        ~Nesting() { --parser_.depth_; }
        Parser& parser_;
    };

    const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
    const Token& next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }

    [[noreturn]] void error(const std::string& message) const {
        fail(ErrorKind::kConfig, where_ + ": line " + std::to_string(peek().line) + ": " + message);
    }

    bool at_operator(const std::string& op) const { return peek().type == Type::kOperator && peek().text == op; }
    bool at_name(const std::string& name) const { return peek().type == Type::kName && peek().text == name; }
    void expect_operator(const std::string& op) {
        if (!at_operator(op)) error("expected '" + op + "', found '" + peek().text + "'");
        next();
    }
    void expect_name(const std::string& name) {
        if (!at_name(name)) error("expected '" + name + "', found '" + peek().text + "'");
        next();
    }
    std::string expect_identifier() {
        if (peek().type != Type::kName) error("expected a name, found '" + peek().text + "'");
        return next().text;
    }
    void expect_block_end() {
        if (peek().type != Type::kBlockEnd) error("expected the end of the tag (%}), found '" + peek().text + "'");
        next();
    }
    // The name of the block tag starting at the cursor ("{%" then a name), or "".
    std::string block_name() const {
        return peek().type == Type::kBlockBegin && peek(1).type == Type::kName ? peek(1).text : "";
    }

    // Statements up to (not including) a block tag whose name is in `stops`, or the end.
    Body parse_body(const std::vector<std::string>& stops) {
        const Nesting nesting(*this);
        Body body;
        while (peek().type != Type::kEnd) {
            const Token& token = peek();
            if (token.type == Type::kText) {
                auto stmt = make(Stmt::Kind::kText);
                stmt->text = next().text;
                body.push_back(std::move(stmt));
            } else if (token.type == Type::kVarBegin) {
                next();
                auto stmt = make(Stmt::Kind::kOutput);
                stmt->expr = parse_expression();
                if (peek().type != Type::kVarEnd) error("expected the end of the expression (}}), found '" + peek().text + "'");
                next();
                body.push_back(std::move(stmt));
            } else if (token.type == Type::kBlockBegin) {
                const std::string name = block_name();
                for (const std::string& stop : stops)
                    if (name == stop) return body;
                body.push_back(parse_statement());
            } else {
                error("unexpected '" + token.text + "'");
            }
        }
        if (!stops.empty()) error("the template ends before {% " + join(stops, " %} or {% ") + " %}");
        return body;
    }

    std::unique_ptr<Stmt> make(Stmt::Kind kind) const {
        auto stmt = std::make_unique<Stmt>();
        stmt->kind = kind;
        stmt->line = peek().line;
        return stmt;
    }

    std::unique_ptr<Stmt> parse_statement() {
        next();  // {%
        const std::string name = expect_identifier();
        if (name == "if") return parse_if();
        if (name == "for") return parse_for();
        if (name == "set") return parse_set();
        if (name == "macro") return parse_macro();
        if (name == "generation") {
            auto stmt = make(Stmt::Kind::kGeneration);
            expect_block_end();
            stmt->body = parse_body({"endgeneration"});
            end_block("endgeneration");
            return stmt;
        }
        if (name == "break" || name == "continue") {
            auto stmt = make(name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue);
            expect_block_end();
            return stmt;
        }
        error("unknown tag {% " + name + " %} (ftlaunch renders if, for, set, macro, break, continue, generation)");
    }

    void end_block(const std::string& name) {
        next();  // {%
        expect_name(name);
        expect_block_end();
    }

    std::unique_ptr<Stmt> parse_if() {
        auto stmt = make(Stmt::Kind::kIf);
        ExprPtr condition = parse_expression();
        expect_block_end();
        while (true) {
            Body body = parse_body({"elif", "else", "endif"});
            stmt->branches.emplace_back(std::move(condition), std::move(body));
            const std::string tag = block_name();
            next();
            next();
            if (tag == "elif") {
                condition = parse_expression();
                expect_block_end();
                continue;
            }
            expect_block_end();
            if (tag == "else") {
                stmt->else_body = parse_body({"endif"});
                end_block("endif");
            }
            return stmt;
        }
    }

    std::vector<std::string> parse_targets() {
        std::vector<std::string> targets{expect_identifier()};
        while (at_operator(",")) {
            next();
            targets.push_back(expect_identifier());
        }
        return targets;
    }

    std::unique_ptr<Stmt> parse_for() {
        auto stmt = make(Stmt::Kind::kFor);
        const bool parenthesised = at_operator("(");
        if (parenthesised) next();
        stmt->targets = parse_targets();
        if (parenthesised) expect_operator(")");
        expect_name("in");
        stmt->expr = parse_conditional(false);
        if (at_name("if")) {
            next();
            stmt->condition = parse_conditional(false);
        }
        if (at_name("recursive")) error("recursive loops are not supported");
        expect_block_end();
        stmt->body = parse_body({"else", "endfor"});
        if (block_name() == "else") {
            next();
            next();
            expect_block_end();
            stmt->else_body = parse_body({"endfor"});
        }
        end_block("endfor");
        return stmt;
    }

    std::unique_ptr<Stmt> parse_set() {
        auto stmt = make(Stmt::Kind::kSet);
        stmt->targets = {expect_identifier()};
        if (at_operator(".")) {
            next();
            stmt->attribute = expect_identifier();
        } else {
            while (at_operator(",")) {
                next();
                stmt->targets.push_back(expect_identifier());
            }
        }
        if (peek().type == Type::kBlockEnd && stmt->attribute.empty() && stmt->targets.size() == 1) {
            next();
            stmt->kind = Stmt::Kind::kSetBlock;
            stmt->body = parse_body({"endset"});
            end_block("endset");
            return stmt;
        }
        expect_operator("=");
        stmt->expr = parse_tuple();
        expect_block_end();
        return stmt;
    }

    std::unique_ptr<Stmt> parse_macro() {
        auto stmt = make(Stmt::Kind::kMacro);
        stmt->targets = {expect_identifier()};
        expect_operator("(");
        while (!at_operator(")")) {
            std::string param = expect_identifier();
            ExprPtr fallback;
            if (at_operator("=")) {
                next();
                fallback = parse_expression();
            }
            stmt->parameters.emplace_back(std::move(param), std::move(fallback));
            if (!at_operator(")")) expect_operator(",");
        }
        next();
        expect_block_end();
        stmt->body = parse_body({"endmacro"});
        end_block("endmacro");
        return stmt;
    }

    // Python's ints are unbounded; ftlaunch's are 64-bit, and a literal beyond that is refused.
    int64_t integer(const Token& token) const {
        const auto value = parse_int(token.text);
        if (!value) error("the integer " + token.text + " does not fit in 64 bits");
        return static_cast<int64_t>(*value);
    }

    ExprPtr node(Expr::Kind kind, int line) const {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->line = line;
        return e;
    }
    ExprPtr binary(Expr::Kind kind, std::string op, ExprPtr left, ExprPtr right) const {
        auto e = node(kind, left->line);
        e->name = std::move(op);
        e->operands.push_back(std::move(left));
        e->operands.push_back(std::move(right));
        return e;
    }

    // `a, b` without brackets (set's value) is a tuple.
    ExprPtr parse_tuple() {
        ExprPtr first = parse_expression();
        if (!at_operator(",")) return first;
        auto list = node(Expr::Kind::kList, first->line);
        list->operands.push_back(std::move(first));
        while (at_operator(",")) {
            next();
            list->operands.push_back(parse_expression());
        }
        return list;
    }

    ExprPtr parse_expression() { return parse_conditional(true); }

    ExprPtr parse_conditional(bool with_condition) {
        ExprPtr value = parse_or();
        while (with_condition && at_name("if")) {
            next();
            auto e = node(Expr::Kind::kConditional, value->line);
            e->operands.push_back(std::move(value));
            e->operands.push_back(parse_or());
            if (at_name("else")) {
                next();
                e->operands.push_back(parse_conditional(true));
            } else {
                e->operands.push_back(nullptr);
            }
            value = std::move(e);
        }
        return value;
    }

    ExprPtr parse_or() {
        ExprPtr left = parse_and();
        while (at_name("or")) {
            next();
            left = binary(Expr::Kind::kOr, "or", std::move(left), parse_and());
        }
        return left;
    }

    ExprPtr parse_and() {
        ExprPtr left = parse_not();
        while (at_name("and")) {
            next();
            left = binary(Expr::Kind::kAnd, "and", std::move(left), parse_not());
        }
        return left;
    }

    ExprPtr parse_not() {
        const Nesting nesting(*this);
        if (at_name("not")) {
            const int line = next().line;
            auto e = node(Expr::Kind::kNot, line);
            e->operands.push_back(parse_not());
            return e;
        }
        return parse_compare();
    }

    ExprPtr parse_compare() {
        ExprPtr first = parse_math1();
        ExprPtr compare;
        while (true) {
            std::string op;
            if (peek().type == Type::kOperator &&
                (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == "<=" ||
                 peek().text == ">" || peek().text == ">=")) {
                op = next().text;
            } else if (at_name("in")) {
                next();
                op = "in";
            } else if (at_name("not") && peek(1).type == Type::kName && peek(1).text == "in") {
                next();
                next();
                op = "not in";
            } else {
                break;
            }
            if (!compare) {
                compare = node(Expr::Kind::kCompare, first->line);
                compare->operands.push_back(std::move(first));
            }
            compare->comparisons.push_back(op);
            compare->operands.push_back(parse_math1());
        }
        return compare ? std::move(compare) : std::move(first);
    }

    ExprPtr parse_math1() {
        ExprPtr left = parse_concat();
        while (at_operator("+") || at_operator("-")) {
            const std::string op = next().text;
            left = binary(Expr::Kind::kBinary, op, std::move(left), parse_concat());
        }
        return left;
    }

    ExprPtr parse_concat() {
        ExprPtr left = parse_math2();
        while (at_operator("~")) {
            next();
            left = binary(Expr::Kind::kBinary, "~", std::move(left), parse_math2());
        }
        return left;
    }

    ExprPtr parse_math2() {
        ExprPtr left = parse_pow();
        while (at_operator("*") || at_operator("/") || at_operator("//") || at_operator("%")) {
            const std::string op = next().text;
            left = binary(Expr::Kind::kBinary, op, std::move(left), parse_pow());
        }
        return left;
    }

    ExprPtr parse_pow() {
        ExprPtr left = parse_unary(true);
        while (at_operator("**")) {
            next();
            left = binary(Expr::Kind::kBinary, "**", std::move(left), parse_unary(true));
        }
        return left;
    }

    ExprPtr parse_unary(bool with_filter) {
        const Nesting nesting(*this);
        ExprPtr value;
        if (at_operator("-") || at_operator("+")) {
            const Token& sign = next();
            ExprPtr operand = parse_unary(false);
            if (sign.text == "-") {
                value = node(Expr::Kind::kNegate, sign.line);
                value->operands.push_back(std::move(operand));
            } else {
                value = std::move(operand);
            }
        } else {
            value = parse_postfix(parse_primary());
        }
        return with_filter ? parse_filters(std::move(value)) : std::move(value);
    }

    ExprPtr parse_primary() {
        const Nesting nesting(*this);
        const Token& token = next();
        auto literal = [&](Value v) {
            auto e = node(Expr::Kind::kLiteral, token.line);
            e->literal = std::move(v);
            return e;
        };
        switch (token.type) {
            case Type::kString: {
                std::string text = token.text;
                while (peek().type == Type::kString) text += next().text;  // adjacent strings join
                return literal(Value(text));
            }
            case Type::kInt: return literal(Value(integer(token)));
            case Type::kFloat: return literal(Value(std::strtod(token.text.c_str(), nullptr)));  // inf beyond range, as Python
            case Type::kName: {
                if (token.text == "true" || token.text == "True") return literal(Value(true));
                if (token.text == "false" || token.text == "False") return literal(Value(false));
                if (token.text == "none" || token.text == "None") return literal(Value::none());
                auto e = node(Expr::Kind::kName, token.line);
                e->name = token.text;
                return e;
            }
            case Type::kOperator:
                if (token.text == "(") {
                    if (at_operator(")")) {
                        next();
                        return node(Expr::Kind::kList, token.line);
                    }
                    ExprPtr inner = parse_tuple();
                    expect_operator(")");
                    return inner;
                }
                if (token.text == "[") {
                    auto list = node(Expr::Kind::kList, token.line);
                    while (!at_operator("]")) {
                        list->operands.push_back(parse_expression());
                        if (!at_operator("]")) expect_operator(",");
                    }
                    next();
                    return list;
                }
                if (token.text == "{") {
                    auto dict = node(Expr::Kind::kDict, token.line);
                    while (!at_operator("}")) {
                        dict->operands.push_back(parse_expression());
                        expect_operator(":");
                        dict->operands.push_back(parse_expression());
                        if (!at_operator("}")) expect_operator(",");
                    }
                    next();
                    return dict;
                }
                break;
            default: break;
        }
        --pos_;
        error("unexpected '" + token.text + "' where a value should be");
    }

    ExprPtr parse_postfix(ExprPtr value) {
        while (true) {
            if (at_operator(".")) {
                next();
                auto e = node(Expr::Kind::kAttribute, value->line);
                if (peek().type == Type::kInt) {  // foo.0 is foo[0]
                    e->kind = Expr::Kind::kItem;
                    e->operands.push_back(std::move(value));
                    auto index = node(Expr::Kind::kLiteral, e->line);
                    index->literal = Value(integer(next()));
                    e->operands.push_back(std::move(index));
                } else {
                    e->name = expect_identifier();
                    e->operands.push_back(std::move(value));
                }
                value = std::move(e);
            } else if (at_operator("[")) {
                next();
                value = parse_subscript(std::move(value));
            } else if (at_operator("(")) {
                value = parse_call(std::move(value), Expr::Kind::kCall, "");
            } else {
                return value;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr value) {
        const int line = value->line;
        ExprPtr parts[3];
        int part = 0;
        bool slice = false;
        while (!at_operator("]")) {
            if (at_operator(":")) {
                next();
                slice = true;
                if (++part > 2) error("a slice has at most three parts");
                continue;
            }
            if (parts[part]) error("expected ':' or ']' in a subscript, found '" + peek().text + "'");
            parts[part] = parse_expression();
        }
        next();
        auto e = node(slice ? Expr::Kind::kSlice : Expr::Kind::kItem, line);
        e->operands.push_back(std::move(value));
        if (!slice) {
            if (!parts[0]) error("an empty subscript []");
            e->operands.push_back(std::move(parts[0]));
        } else {
            for (auto& p : parts) e->operands.push_back(std::move(p));
        }
        return e;
    }

    // (args, key=value...) after `value`; kind kCall, kFilter or kTest with `name`.
    ExprPtr parse_call(ExprPtr value, Expr::Kind kind, std::string name) {
        auto e = node(kind, value->line);
        e->name = std::move(name);
        e->operands.push_back(std::move(value));
        expect_operator("(");
        while (!at_operator(")")) {
            if (peek().type == Type::kName && peek(1).type == Type::kOperator && peek(1).text == "=") {
                std::string key = next().text;
                next();
                e->keyword.emplace_back(std::move(key), parse_expression());
            } else {
                e->operands.push_back(parse_expression());
            }
            if (!at_operator(")")) expect_operator(",");
        }
        next();
        return e;
    }

    ExprPtr parse_filters(ExprPtr value) {
        while (true) {
            if (at_operator("|")) {
                next();
                std::string name = expect_identifier();
                while (at_operator(".")) {  // dotted filter names
                    next();
                    name += "." + expect_identifier();
                }
                if (at_operator("(")) {
                    value = parse_call(std::move(value), Expr::Kind::kFilter, name);
                } else {
                    auto e = node(Expr::Kind::kFilter, value->line);
                    e->name = name;
                    e->operands.push_back(std::move(value));
                    value = std::move(e);
                }
            } else if (at_name("is")) {
                next();
                const bool negated = at_name("not");
                if (negated) next();
                std::string name = peek().type == Type::kName ? next().text : "";
                if (name.empty() && peek().type == Type::kOperator && (peek().text == "==" || peek().text == "!="))
                    name = next().text;
                if (name.empty()) error("expected a test name after 'is'");
                ExprPtr test;
                if (at_operator("(")) {
                    test = parse_call(std::move(value), Expr::Kind::kTest, name);
                } else {
                    test = node(Expr::Kind::kTest, value->line);
                    test->name = name;
                    test->operands.push_back(std::move(value));
                    // `is divisibleby 3`, `is sameas none`: one argument without brackets.
                    const Token& t = peek();
                    const bool argument = t.type == Type::kString || t.type == Type::kInt || t.type == Type::kFloat ||
                                          (t.type == Type::kName && t.text != "and" && t.text != "or" &&
                                           t.text != "else" && t.text != "if" && t.text != "is" && t.text != "in" &&
                                           t.text != "not");
                    if (argument) test->operands.push_back(parse_postfix(parse_primary()));
                }
                test->negated = negated;
                value = std::move(test);
            } else if (at_operator("(")) {
                value = parse_call(std::move(value), Expr::Kind::kCall, "");
            } else {
                return value;
            }
        }
    }

    const std::vector<Token>& tokens_;
    const std::string& where_;
    size_t pos_ = 0;
    int depth_ = 0;
};

}  // namespace

Body parse(const std::vector<Token>& tokens, const std::string& where) { return Parser(tokens, where).parse_template(); }

}  // namespace ftl::jinja
