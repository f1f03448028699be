// The template renderer: walks the syntax tree with a stack of scopes (the globals and the
// caller's variables at the bottom, one scope per loop iteration and per macro call, as jinja2
// scopes them: `set` inside a loop is not seen by the next iteration nor after the loop;
// namespace() objects carry values out).
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cmath>
#include <ctime>
#include <map>

#include "jinja/builtins.h"
#include "jinja/lexer.h"
#include "jinja/parser.h"
#include "jinja/template.h"
#include "util/error.h"

namespace ftl::jinja {
namespace {

using Scope = std::map<std::string, Value>;
using K = Value::Kind;

// Sandboxed range(): jinja2's sandbox refuses ranges of more than 100,000 items.
Value python_range(CallArgs& args) {
    std::vector<int64_t> bounds;
    for (const Value& v : args.positional) {
        if (v.kind() != K::kInt && v.kind() != K::kBool) raise("range() takes integers, got " + v.type_name());
        bounds.push_back(v.as_int());
    }
    if (bounds.empty() || bounds.size() > 3) raise("range() takes 1 to 3 integers");
    const int64_t start = bounds.size() == 1 ? 0 : bounds[0];
    const int64_t stop = bounds.size() == 1 ? bounds[0] : bounds[1];
    const int64_t step = bounds.size() == 3 ? bounds[2] : 1;
    if (step == 0) raise("range() step must not be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (out.size() >= 100000) raise("range() is too big (the sandbox allows 100,000 items)");
        out.emplace_back(i);
        if (__builtin_add_overflow(i, step, &i)) break;  // past the 64-bit range: past stop
    }
    return Value::list(std::move(out));
}

Dict keyword_dict(CallArgs& args, const std::string& what) {
    Dict entries;
    if (!args.positional.empty()) {
        if (args.positional.size() > 1 || !args.positional[0].is_mapping()) raise(what + "() takes one mapping and keywords");
        entries = args.positional[0].as_dict();
    }
    for (auto& [key, value] : args.keyword) {
        if (what == "namespace" && !key.empty() && key[0] == '_')
            raise("namespace(): attributes starting with an underscore are refused (as transformers refuses them)");
        bool replaced = false;
        for (auto& entry : entries)
            if (entry.first == key) entry.second = value, replaced = true;
        if (!replaced) entries.emplace_back(key, value);
    }
    return entries;
}

Scope globals() {
    Scope g;
    g["range"] = Value::function("range", python_range);
    g["namespace"] = Value::function("namespace", [](CallArgs& a) { return Value::name_space(keyword_dict(a, "namespace")); });
    g["dict"] = Value::function("dict", [](CallArgs& a) { return Value::dict(keyword_dict(a, "dict")); });
    g["raise_exception"] = Value::function("raise_exception", [](CallArgs& a) -> Value {
        raise("the chat template raised an exception: " + argument(a, 0, "message", Value("")).str());
    });
    g["strftime_now"] = Value::function("strftime_now", [](CallArgs& a) {
        const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
        std::tm local{};
        localtime_r(&now, &local);
        char buf[256];
        const size_t n = std::strftime(buf, sizeof buf, argument(a, 0, "format", Value("")).str().c_str(), &local);
        return Value(std::string(buf, n));
    });
    return g;
}

int64_t floor_div(int64_t a, int64_t b) {
    if (a == INT64_MIN && b == -1) raise("integer overflow: ftlaunch's integers are 64-bit");
    const int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

Value repeat(const Value& seq, int64_t times) {
    times = std::max<int64_t>(times, 0);
    const size_t unit = seq.is_string() ? seq.as_string().size() : seq.as_list().size();
    if (unit > 0 && static_cast<uint64_t>(times) > kMaxBuilt / unit) check_size(kMaxBuilt + 1);
    if (seq.is_string()) {
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += seq.as_string();
        return Value(out);
    }
    List out;
    for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
    return Value::list(std::move(out));
}

// Python's binary operators on jinja2's values.
Value arithmetic(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") {
        std::string text = a.str() + b.str();
        check_size(text.size());
        return Value(std::move(text));
    }
    for (const Value* v : {&a, &b})
        if (v->is_undefined()) raise("'" + v->name() + "' is undefined (used with " + op + ")");
    const bool numbers = a.is_number() && b.is_number();
    const bool floats = numbers && (a.kind() == K::kFloat || b.kind() == K::kFloat);
    if (op == "+") {
        if (a.is_string() && b.is_string()) {
            check_size(a.as_string().size() + b.as_string().size());
            return Value(a.as_string() + b.as_string());
        }
        if (a.kind() == K::kList && b.kind() == K::kList) {
            check_size(a.as_list().size() + b.as_list().size());
            List out = a.as_list();
            out.insert(out.end(), b.as_list().begin(), b.as_list().end());
            return Value::list(std::move(out));
        }
        if (numbers) return floats ? Value(a.as_float() + b.as_float()) : Value(checked_add(a.as_int(), b.as_int()));
    } else if (op == "-" && numbers) {
        if (floats) return Value(a.as_float() - b.as_float());
        if (b.as_int() == INT64_MIN) raise("integer overflow: ftlaunch's integers are 64-bit");
        return Value(checked_add(a.as_int(), -b.as_int()));
    } else if (op == "*") {
        if (numbers) return floats ? Value(a.as_float() * b.as_float()) : Value(checked_mul(a.as_int(), b.as_int()));
        if ((a.is_string() || a.kind() == K::kList) && (b.kind() == K::kInt || b.kind() == K::kBool)) return repeat(a, b.as_int());
        if ((b.is_string() || b.kind() == K::kList) && (a.kind() == K::kInt || a.kind() == K::kBool)) return repeat(b, a.as_int());
    } else if (numbers && (op == "/" || op == "//" || op == "%")) {
        if (b.as_float() == 0) raise("division by zero");
        if (op == "/") return Value(a.as_float() / b.as_float());
        if (!floats) return op == "//" ? Value(floor_div(a.as_int(), b.as_int()))
                                       : Value(b.as_int() == -1 ? 0 : a.as_int() - floor_div(a.as_int(), b.as_int()) * b.as_int());
        const double q = std::floor(a.as_float() / b.as_float());
        return op == "//" ? Value(q) : Value(a.as_float() - q * b.as_float());
    } else if (op == "**" && numbers) {
        if (!floats && b.as_int() >= 0) {  // by squaring, every product checked
            int64_t result = 1, base = a.as_int();
            for (int64_t e = b.as_int(); e > 0; e >>= 1) {
                if (e & 1) result = checked_mul(result, base);
                if (e > 1) base = checked_mul(base, base);
            }
            return Value(result);
        }
        return Value(std::pow(a.as_float(), b.as_float()));
    } else if (op == "%" && a.is_string()) {
        raise("%-formatting of strings is not supported; use ~ or the format of the values themselves");
    }
    raise("unsupported operand types for " + op + ": " + a.type_name() + " and " + b.type_name());
}

// Whether `v` is or holds (in lists, dicts, namespaces) the namespace whose attributes are
// `attributes`: the only way a value can come to hold itself, which printing could not end.
bool holds(const Value& v, const Dict& attributes) {
    if (v.kind() == K::kList) {
        for (const Value& item : v.as_list())
            if (holds(item, attributes)) return true;
    } else if (v.is_mapping()) {
        if (&v.as_dict() == &attributes) return true;
        for (const auto& [key, item] : v.as_dict())
            if (holds(item, attributes)) return true;
    }
    return false;
}

bool contains(const Value& container, const Value& item) {
    if (container.is_string()) {
        if (!item.is_string()) raise("'in <string>' needs a string on the left, got " + item.type_name());
        return container.as_string().find(item.as_string()) != std::string::npos;
    }
    if (container.is_mapping()) return item.is_string() && container.find(item.as_string()) != nullptr;
    if (container.kind() == K::kList) {
        for (const Value& v : container.as_list())
            if (equal(v, item)) return true;
        return false;
    }
    if (container.is_undefined()) return false;
    raise("'in' needs a string, list or mapping on the right, got " + container.type_name());
}

bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equal(a, b);
    if (op == "!=") return !equal(a, b);
    if (op == "in") return contains(b, a);
    if (op == "not in") return !contains(b, a);
    int order = 0;
    if (a.is_number() && b.is_number()) order = a.as_float() < b.as_float() ? -1 : a.as_float() > b.as_float() ? 1 : 0;
    else if (a.is_string() && b.is_string()) order = a.as_string().compare(b.as_string());
    else raise("cannot compare a " + a.type_name() + " and a " + b.type_name() + " with " + op);
    if (op == "<") return order < 0;
    if (op == "<=") return order <= 0;
    if (op == ">") return order > 0;
    return order >= 0;
}

class Renderer {
public:
    Renderer(const Dict& variables, uint64_t step_limit) : step_limit_(step_limit) {
        scopes_.push_back(globals());
        for (const auto& [name, value] : variables) scopes_[0][name] = value;
    }

    Rendered run(const Body& body) {
        if (render_body(body) != Flow::kNormal) raise("{% break %} or {% continue %} outside a loop");
        return {std::move(out_), std::move(spans_)};
    }

    int line() const { return line_; }

private:
    enum class Flow { kNormal, kBreak, kContinue };

    Flow render_body(const Body& body) {
        for (const auto& stmt : body) {
            const Flow flow = render(*stmt);
            if (flow != Flow::kNormal) return flow;
        }
        return Flow::kNormal;
    }

    // One step per statement, loop iteration and expression evaluated; past the limit the
    // template is stopped.
    void step() {
        if (++steps_ > step_limit_)
            raise("the template ran more than " + std::to_string(step_limit_) +
                  " steps (a chat template takes thousands); stopped rather than hang");
    }

    void write(const std::string& text) {
        check_size(out_.size() + text.size());
        out_ += text;
    }

    Flow render(const Stmt& s) {
        step();
        line_ = s.line;
        switch (s.kind) {
            case Stmt::Kind::kText: write(s.text); return Flow::kNormal;
            case Stmt::Kind::kOutput: write(eval(*s.expr).str()); return Flow::kNormal;
            case Stmt::Kind::kIf:
                for (const auto& [condition, body] : s.branches)
                    if (eval(*condition).truthy()) return render_body(body);
                return render_body(s.else_body);
            case Stmt::Kind::kFor: return render_for(s);
            case Stmt::Kind::kSet: {
                Value value = eval(*s.expr);
                if (!s.attribute.empty()) {
                    Value target = lookup(s.targets[0]);
                    if (target.kind() != K::kNamespace)
                        raise("cannot set ." + s.attribute + " on '" + s.targets[0] + "', which is not a namespace()");
                    if (s.attribute[0] == '_') raise("namespace attributes starting with an underscore are refused");
                    if (holds(value, target.as_dict()))
                        raise("cannot set ." + s.attribute + " on '" + s.targets[0] + "' to a value holding the namespace itself");
                    Dict& attributes = target.mutable_dict();
                    for (auto& entry : attributes)
                        if (entry.first == s.attribute) {
                            entry.second = std::move(value);
                            return Flow::kNormal;
                        }
                    attributes.emplace_back(s.attribute, std::move(value));
                } else {
                    assign_targets(s.targets, value);
                }
                return Flow::kNormal;
            }
            case Stmt::Kind::kSetBlock: scopes_.back()[s.targets[0]] = Value(capture(s.body)); return Flow::kNormal;
            case Stmt::Kind::kMacro: scopes_.back()[s.targets[0]] = macro(s); return Flow::kNormal;
            case Stmt::Kind::kGeneration: {
                const size_t begin = out_.size();
                const Flow flow = render_body(s.body);
                spans_.emplace_back(begin, out_.size());
                return flow;
            }
            case Stmt::Kind::kBreak: return Flow::kBreak;
            case Stmt::Kind::kContinue: return Flow::kContinue;
        }
        return Flow::kNormal;
    }

    void assign_targets(const std::vector<std::string>& targets, const Value& value) {
        if (targets.size() == 1) {
            scopes_.back()[targets[0]] = value;
            return;
        }
        if (value.kind() != K::kList || value.as_list().size() != targets.size())
            raise("cannot unpack a " + value.type_name() + " into " + std::to_string(targets.size()) + " names");
        for (size_t i = 0; i < targets.size(); ++i) scopes_.back()[targets[i]] = value.as_list()[i];
    }

    // Renders `body` into a string of its own (set blocks, macros); its generation spans are
    // dropped, as they do not fall in the final text where they were rendered.
    std::string capture(const Body& body) {
        std::string saved_out = std::move(out_);
        auto saved_spans = std::move(spans_);
        out_.clear();
        spans_.clear();
        const Flow flow = render_body(body);
        std::string text = std::move(out_);
        out_ = std::move(saved_out);
        spans_ = std::move(saved_spans);
        if (flow != Flow::kNormal) raise("{% break %} or {% continue %} outside a loop");
        return text;
    }

    Value macro(const Stmt& s) {
        return Value::function(s.targets[0], [this, &s](CallArgs& args) {
            if (args.positional.size() > s.parameters.size())
                raise("macro '" + s.targets[0] + "' takes " + std::to_string(s.parameters.size()) + " arguments");
            Scope frame;
            for (size_t i = 0; i < s.parameters.size(); ++i) {
                const auto& [name, fallback] = s.parameters[i];
                Value v = argument(args, i, name, Value::undefined(name));
                frame[name] = v.is_undefined() && fallback ? eval(*fallback) : v;
            }
            for (const auto& [key, value] : args.keyword) {
                bool known = false;
                for (const auto& p : s.parameters) known = known || p.first == key;
                if (!known) raise("macro '" + s.targets[0] + "' has no parameter '" + key + "'");
            }
            if (macro_depth_ >= 100) raise("macro calls nest more than 100 deep (runaway recursion?)");
            ++macro_depth_;
            std::vector<Scope> saved = std::move(scopes_);
            scopes_ = {saved.front(), std::move(frame)};
            const int saved_line = line_;
            std::string text;
            try {
                text = capture(s.body);
            } catch (...) {
                scopes_ = std::move(saved);
                --macro_depth_;
                throw;
            }
            scopes_ = std::move(saved);
            --macro_depth_;
            line_ = saved_line;
            return Value(text);
        });
    }

    Flow render_for(const Stmt& s) {
        const Value iterable = eval(*s.expr);
        if (iterable.is_none()) raise("cannot loop over None");
        List items;
        CallArgs none;
        if (iterable.kind() == K::kList) items = iterable.as_list();
        else if (iterable.is_mapping()) items = apply_filter("list", iterable, none).as_list();
        else if (iterable.is_string()) items = apply_filter("list", iterable, none).as_list();
        else if (!iterable.is_undefined()) raise("cannot loop over a " + iterable.type_name());
        if (s.condition) {  // the filter sees each item under the loop's names
            List kept;
            for (const Value& item : items) {
                scopes_.emplace_back();
                assign_targets(s.targets, item);
                const bool keep = eval(*s.condition).truthy();
                scopes_.pop_back();
                if (keep) kept.push_back(item);
            }
            items = std::move(kept);
        }
        const int64_t n = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < n; ++i) {
            step();
            scopes_.emplace_back();  // each iteration starts without the previous one's `set`s
            assign_targets(s.targets, items[static_cast<size_t>(i)]);
            Dict loop = {{"index", Value(i + 1)},          {"index0", Value(i)},
                         {"revindex", Value(n - i)},       {"revindex0", Value(n - i - 1)},
                         {"first", Value(i == 0)},         {"last", Value(i == n - 1)},
                         {"length", Value(n)},             {"depth", Value(1)},
                         {"depth0", Value(0)}};
            if (i > 0) loop.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
            if (i + 1 < n) loop.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
            loop.emplace_back("cycle", Value::function("cycle", [i](CallArgs& a) {
                                  if (a.positional.empty()) raise("loop.cycle() needs at least one value");
                                  return a.positional[static_cast<size_t>(i) % a.positional.size()];
                              }));
            scopes_.back()["loop"] = Value::dict(std::move(loop));
            const Flow flow = render_body(s.body);
            scopes_.pop_back();
            if (flow == Flow::kBreak) break;
        }
        if (n == 0) return render_body(s.else_body);
        return Flow::kNormal;
    }

    Value lookup(const std::string& name) const {
        for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
            auto found = it->find(name);
            if (found != it->end()) return found->second;
        }
        return Value::undefined(name);
    }

    CallArgs evaluate_arguments(const Expr& e) {
        CallArgs args;
        for (size_t i = 1; i < e.operands.size(); ++i) args.positional.push_back(eval(*e.operands[i]));
        for (const auto& [key, value] : e.keyword) args.keyword.emplace_back(key, eval(*value));
        return args;
    }

    Value eval(const Expr& e) {
        step();
        line_ = e.line;
        switch (e.kind) {
            case Expr::Kind::kLiteral: return e.literal;
            case Expr::Kind::kName: return lookup(e.name);
            case Expr::Kind::kList: {
                List items;
                for (const auto& op : e.operands) items.push_back(eval(*op));
                return Value::list(std::move(items));
            }
            case Expr::Kind::kDict: {
                Dict entries;
                for (size_t i = 0; i + 1 < e.operands.size(); i += 2) {
                    const Value key = eval(*e.operands[i]);
                    if (!key.is_string()) raise("dict keys must be strings here, got " + key.type_name());
                    Value value = eval(*e.operands[i + 1]);
                    bool replaced = false;
                    for (auto& entry : entries)
                        if (entry.first == key.as_string()) entry.second = value, replaced = true;
                    if (!replaced) entries.emplace_back(key.as_string(), std::move(value));
                }
                return Value::dict(std::move(entries));
            }
            case Expr::Kind::kAttribute: return get_attribute(eval(*e.operands[0]), e.name);
            case Expr::Kind::kItem: {
                const Value obj = eval(*e.operands[0]);
                return get_item(obj, eval(*e.operands[1]));
            }
            case Expr::Kind::kSlice: {
                const Value obj = eval(*e.operands[0]);
                Value parts[3];
                for (int i = 0; i < 3; ++i)
                    if (e.operands[static_cast<size_t>(i) + 1]) parts[i] = eval(*e.operands[static_cast<size_t>(i) + 1]);
                auto part = [&](int i) { return e.operands[static_cast<size_t>(i) + 1] ? &parts[i] : nullptr; };
                return get_slice(obj, part(0), part(1), part(2));
            }
            case Expr::Kind::kCall: {
                const Value callee = eval(*e.operands[0]);
                if (callee.is_undefined()) raise("'" + callee.name() + "' is undefined (called as a function)");
                if (callee.kind() != K::kFunction) raise("a " + callee.type_name() + " is not callable");
                CallArgs args = evaluate_arguments(e);
                return callee.as_function()(args);
            }
            case Expr::Kind::kFilter: {
                const Value input = eval(*e.operands[0]);
                CallArgs args = evaluate_arguments(e);
                return apply_filter(e.name, input, args);
            }
            case Expr::Kind::kTest: {
                const Value input = eval(*e.operands[0]);
                CallArgs args = evaluate_arguments(e);
                return Value(apply_test(e.name, input, args) != e.negated);
            }
            case Expr::Kind::kNot: return Value(!eval(*e.operands[0]).truthy());
            case Expr::Kind::kNegate: {
                const Value v = eval(*e.operands[0]);
                if (v.kind() == K::kFloat) return Value(-v.as_float());
                if (v.is_number()) return Value(checked_mul(v.as_int(), -1));
                raise("cannot negate a " + v.type_name());
            }
            case Expr::Kind::kBinary: {
                const Value a = eval(*e.operands[0]);
                return arithmetic(e.name, a, eval(*e.operands[1]));
            }
            case Expr::Kind::kAnd: {
                Value a = eval(*e.operands[0]);
                return a.truthy() ? eval(*e.operands[1]) : a;
            }
            case Expr::Kind::kOr: {
                Value a = eval(*e.operands[0]);
                return a.truthy() ? a : eval(*e.operands[1]);
            }
            case Expr::Kind::kCompare: {
                Value left = eval(*e.operands[0]);
                for (size_t i = 0; i < e.comparisons.size(); ++i) {
                    Value right = eval(*e.operands[i + 1]);
                    if (!compare(e.comparisons[i], left, right)) return Value(false);
                    left = std::move(right);
                }
                return Value(true);
            }
            case Expr::Kind::kConditional:
                if (eval(*e.operands[1]).truthy()) return eval(*e.operands[0]);
                return e.operands[2] ? eval(*e.operands[2]) : Value::undefined("else");
        }
        return Value();
    }

    uint64_t step_limit_;
    uint64_t steps_ = 0;
    int macro_depth_ = 0;
    std::vector<Scope> scopes_;
    std::string out_;
    std::vector<std::pair<size_t, size_t>> spans_;
    int line_ = 0;
};

// Unknown filters and tests are errors when the template is read, as jinja2 compiles them.
void check_names(const Expr& e, const std::string& where, bool& generation) {
    if (e.kind == Expr::Kind::kFilter && !has_filter(e.name))
        fail(ErrorKind::kConfig, where + ": line " + std::to_string(e.line) + ": no filter named '" + e.name + "'");
    if (e.kind == Expr::Kind::kTest && !has_test(e.name))
        fail(ErrorKind::kConfig, where + ": line " + std::to_string(e.line) + ": no test named '" + e.name + "'");
    for (const auto& op : e.operands)
        if (op) check_names(*op, where, generation);
    for (const auto& [key, value] : e.keyword) check_names(*value, where, generation);
}

void check_names(const Body& body, const std::string& where, bool& generation) {
    for (const auto& s : body) {
        generation = generation || s->kind == Stmt::Kind::kGeneration;
        for (const ExprPtr* e : {&s->expr, &s->condition})
            if (*e) check_names(**e, where, generation);
        for (const auto& [condition, branch] : s->branches) {
            check_names(*condition, where, generation);
            check_names(branch, where, generation);
        }
        for (const auto& [name, fallback] : s->parameters)
            if (fallback) check_names(*fallback, where, generation);
        check_names(s->body, where, generation);
        check_names(s->else_body, where, generation);
    }
}

}  // namespace

Template Template::parse(const std::string& source, std::string where) {
    Template t;
    t.where_ = std::move(where);
    t.body_ = std::make_shared<const Body>(jinja::parse(lex(source, t.where_), t.where_));
    check_names(*t.body_, t.where_, t.has_generation_);
    return t;
}

Rendered Template::render(const Dict& variables, uint64_t step_limit) const {
    Renderer renderer(variables, step_limit);
    try {
        return renderer.run(*body_);
    } catch (const RenderError& e) {
        fail(ErrorKind::kConfig, where_ + ": line " + std::to_string(renderer.line()) + ": " + e.what());
    }
}

}  // namespace ftl::jinja
