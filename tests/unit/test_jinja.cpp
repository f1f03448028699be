// Jinja chat templates: what is refused and how the error reads. What renders, and how, is
// proven against transformers' own environment in tests/parity/test_chat_templates.py.
#include "catch.h"
#include "jinja/template.h"

using namespace ftl;
using namespace ftl::jinja;

namespace {
std::string render(const std::string& source, Dict variables = {}) {
    return Template::parse(source, "m/tokenizer_config.json: chat_template").render(variables).text;
}
}  // namespace

TEST_CASE("jinja: trim_blocks, lstrip_blocks and generation spans as transformers configures jinja2") {
    CHECK(render("{% for x in xs %}\n  {% if x %}[{{ x }}]{% endif %}\n{% endfor %}\n",
                 {{"xs", Value::list({Value(1), Value(0), Value("a")})}}) == "[1][a]");
    const Rendered r = Template::parse("a{% generation %}b{{ 'é' }}{% endgeneration %}c", "t").render({});
    CHECK(r.text == "abéc");
    REQUIRE(r.generation_spans.size() == 1);
    CHECK(r.generation_spans[0] == std::pair<size_t, size_t>{1, 4});  // bytes: 'b' and the two of 'é'
}

TEST_CASE("jinja: syntax errors, unknown filters and tags name the template and line") {
    FTL_REQUIRE_ERROR(render("line\n{{ x | nosuchfilter }}"), ErrorKind::kConfig,
                      "m/tokenizer_config.json: chat_template: line 2: no filter named 'nosuchfilter'");
    FTL_REQUIRE_ERROR(render("{% if x is nosuchtest %}{% endif %}"), ErrorKind::kConfig, "no test named 'nosuchtest'");
    FTL_REQUIRE_ERROR(render("{% for m in messages %}"), ErrorKind::kConfig, "ends before {% else %} or {% endfor %}");
    FTL_REQUIRE_ERROR(render("{% include 'x' %}"), ErrorKind::kConfig, "unknown tag {% include %}");
    FTL_REQUIRE_ERROR(render("\n\n{{ 'open }}"), ErrorKind::kConfig, "line 3: a string is never closed");
    FTL_REQUIRE_ERROR(render("{{ (1 }}"), ErrorKind::kConfig, "line 1: unexpected '}', expected ')'");
    FTL_REQUIRE_ERROR(render("{{ [1,"), ErrorKind::kConfig, "line 1: a bracket opened in a tag is never closed");
    FTL_REQUIRE_ERROR(render("{{ (1] }}"), ErrorKind::kConfig, "line 1: unexpected ']', expected ')'");
}

TEST_CASE("jinja: rendering errors: raise_exception, undefined values, mutation") {
    FTL_REQUIRE_ERROR(render("ok\n{{ raise_exception('Roles must alternate') }}"), ErrorKind::kConfig,
                      "line 2: the chat template raised an exception: Roles must alternate");
    FTL_REQUIRE_ERROR(render("{{ message.content }}"), ErrorKind::kConfig, "'message' is undefined");
    FTL_REQUIRE_ERROR(render("{{ nothing() }}"), ErrorKind::kConfig, "'nothing' is undefined");
    FTL_REQUIRE_ERROR(render("{{ xs.append(1) }}", {{"xs", Value::list({})}}), ErrorKind::kConfig, "immutable sandbox");
    FTL_REQUIRE_ERROR(render("{{ 'a' + 1 }}"), ErrorKind::kConfig, "unsupported operand types for +: string and int");
    FTL_REQUIRE_ERROR(render("{{ '%s' % 1 }}"), ErrorKind::kConfig, "%-formatting");
    FTL_REQUIRE_ERROR(render("{% set x = 1 %}{% set x.a = 2 %}"), ErrorKind::kConfig, "not a namespace()");
    FTL_REQUIRE_ERROR(render("{{ range(200000) | length }}"), ErrorKind::kConfig, "100,000");
}

TEST_CASE("jinja: a runaway template is stopped after its step limit") {
    const Template t = Template::parse("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "t");
    FTL_REQUIRE_ERROR(t.render({}, 100000), ErrorKind::kConfig, "ran more than 100000 steps");
    CHECK(t.render({}, 10'000'000).text.empty());
}

TEST_CASE("jinja: hostile nesting and recursion are errors, not stack overflows") {
    FTL_REQUIRE_ERROR(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"), ErrorKind::kConfig,
                      "nests more than 200 levels");
    FTL_REQUIRE_ERROR(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), ErrorKind::kConfig,
                      "macro calls nest more than 100 deep");
    FTL_REQUIRE_ERROR(render("{{ 99999999999999999999 }}"), ErrorKind::kConfig, "does not fit in 64 bits");
    FTL_REQUIRE_ERROR(render("{{ '\\U00110000' }}"), ErrorKind::kConfig, "not a Unicode character");
    CHECK(render("{{ 1e999 }}") == "inf");
    FTL_REQUIRE_ERROR(render("{% set ns = namespace(a=1) %}{% set ns.b = [ns] %}{{ ns }}"), ErrorKind::kConfig,
                      "holding the namespace itself");
}

TEST_CASE("jinja: letter case as Python maps it, special cases refused") {
    CHECK(render("{{ 'Élan ПРИВЕТ' | lower }}|{{ 'ǆemal' | capitalize }}|{{ '123' is lower }}|{{ 'é1' is lower }}") ==
          "élan привет|ǅemal|False|True");
    FTL_REQUIRE_ERROR(render("{{ 'straße' | upper }}"), ErrorKind::kConfig, "special case");
    FTL_REQUIRE_ERROR(render("{{ 'ΟΔΟΣ' | lower }}"), ErrorKind::kConfig, "special case");
}
