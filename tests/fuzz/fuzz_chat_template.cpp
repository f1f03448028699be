// libFuzzer target: any text as a chat template (what a model folder ships, untrusted) must
// compile and render a small conversation — or raise ftl::Error. Rendering is bounded by a step
// limit, so a runaway loop is an error too; a {% generation %} span must lie inside the text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "jinja/template.h"
#include "util/error.h"

namespace {

ftl::jinja::Dict variables() {
    using ftl::jinja::Value;
    const Value system = Value::dict({{"role", Value("system")}, {"content", Value("Be brief.")}});
    const Value user = Value::dict({{"role", Value("user")}, {"content", Value("  Hi, ünïcode 🌍\n")}});
    const Value call = Value::dict({{"function", Value::dict({{"name", Value("f")}, {"arguments", Value::dict({{"x", Value(1.5)}})}})}});
    const Value assistant = Value::dict({{"role", Value("assistant")}, {"content", Value("<think>a</think>b")},
                                         {"tool_calls", Value::list({call})}});
    return {{"bos_token", Value("<s>")},
            {"eos_token", Value("</s>")},
            {"messages", Value::list({system, user, assistant, user})},
            {"tools", Value::list({Value::dict({{"type", Value("function")}, {"function", call}})})},
            {"add_generation_prompt", Value(true)}};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string source(reinterpret_cast<const char*>(data), size);
    static const ftl::jinja::Dict vars = variables();
    try {
        const auto compiled = ftl::jinja::Template::parse(source, "fuzz.jinja");
        const auto rendered = compiled.render(vars, 200'000);
        for (const auto& [begin, end] : rendered.generation_spans)
            if (begin > end || end > rendered.text.size()) std::abort();
    } catch (const ftl::Error&) {
    }
    return 0;
}
