#include "tokenizer/chat_renderer.h"

#include "util/error.h"

namespace ftl::tokenizer {
namespace {

// A list of {"role", "content"} objects, as the native formats read them.
std::vector<ChatMessage> plain_messages(const nlohmann::ordered_json& list, const std::string& where) {
    std::vector<ChatMessage> messages;
    for (const auto& m : list) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
            !m["content"].is_string())
            fail(ErrorKind::kConfig, where + ": messages need string 'role' and 'content'");
        messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    return messages;
}

// transformers' _normalize_chat_messages and _alias_reasoning_fields: keys whose value is None
// dropped; reasoning given as reasoning_content, thinking or reasoning copied to the first two.
jinja::Value template_messages(const nlohmann::ordered_json& list, const std::string& where) {
    jinja::List messages;
    for (const auto& m : list) {
        if (!m.is_object()) fail(ErrorKind::kConfig, where + ": a message is " + m.dump() + "; messages are objects");
        nlohmann::ordered_json message = nlohmann::ordered_json::object();
        for (auto it = m.begin(); it != m.end(); ++it)
            if (!it.value().is_null()) message[it.key()] = it.value();
        for (const char* field : {"reasoning_content", "thinking", "reasoning"})
            if (message.contains(field)) {
                const nlohmann::ordered_json reasoning = message[field];
                if (!message.contains("thinking")) message["thinking"] = reasoning;
                message["reasoning_content"] = reasoning;
                break;
            }
        messages.push_back(jinja::Value::from_json(message));
    }
    return jinja::Value::list(std::move(messages));
}

// The template's variables, as apply_chat_template passes them.
jinja::Dict template_variables(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& record,
                               const HfTokenizer& tokenizer, bool add_generation_prompt, const std::string& where) {
    jinja::Dict variables;
    auto set = [&](const std::string& name, jinja::Value value) {
        for (auto& entry : variables)
            if (entry.first == name) {
                entry.second = std::move(value);
                return;
            }
        variables.emplace_back(name, std::move(value));
    };
    const std::pair<const char*, const std::optional<std::string>*> specials[] = {
        {"bos_token", &tokenizer.bos_token()},
        {"eos_token", &tokenizer.eos_token()},
        {"unk_token", &tokenizer.unk_token()},
        {"pad_token", &tokenizer.pad_token()}};
    for (const auto& [name, token] : specials)
        if (*token) set(name, jinja::Value(**token));
    if (auto kwargs = record.find("chat_template_kwargs"); kwargs != record.end() && !kwargs->is_null()) {
        if (!kwargs->is_object())
            fail(ErrorKind::kConfig, where + ": chat_template_kwargs must be an object, got " + kwargs->dump());
        for (auto it = kwargs->begin(); it != kwargs->end(); ++it) set(it.key(), jinja::Value::from_json(it.value()));
    }
    set("messages", template_messages(messages, where));
    jinja::Value tools = jinja::Value::none();
    if (auto column = record.find("tools"); column != record.end() && !column->is_null()) {
        if (column->is_string()) {  // TRL's json.loads: keys in the order written
            const auto parsed = nlohmann::ordered_json::parse(column->get<std::string>(), nullptr, false);
            if (parsed.is_discarded()) fail(ErrorKind::kConfig, where + ": `tools` is a string that is not JSON");
            tools = jinja::Value::from_json(parsed);
        } else {
            tools = jinja::Value::from_json(*column);
        }
    }
    set("tools", tools);
    set("documents", jinja::Value::none());
    set("add_generation_prompt", jinja::Value(add_generation_prompt));
    return variables;
}

}  // namespace

ChatRenderer ChatRenderer::from_tokenizer(const HfTokenizer& tokenizer, std::string where) {
    ChatRenderer renderer;
    renderer.source_ = tokenizer.chat_template();
    renderer.source_name_ = std::move(where);
    return renderer;
}

const jinja::Template& ChatRenderer::compiled() const {
    if (!template_) {
        if (source_.empty())
            fail(ErrorKind::kConfig, source_name_ + ": the tokenizer has no chat_template to render the conversations "
                                                    "with; pass --chat_template_format chatml or zephyr, or use a "
                                                    "dataset of formatted text");
        template_ = std::make_shared<const jinja::Template>(jinja::Template::parse(source_, source_name_));
    }
    return *template_;
}

std::vector<ChatSegment> ChatRenderer::render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& record,
                                              const HfTokenizer& tokenizer, bool add_generation_prompt,
                                              bool mark_assistant, const std::string& where) const {
    if (!messages.is_array()) fail(ErrorKind::kConfig, where + ": a conversation is a list of messages");
    if (format_) {
        const std::vector<ChatMessage> plain = plain_messages(messages, where);
        const std::string eos = tokenizer.eos_token().value_or("");
        if (!mark_assistant) return {{render_chat(*format_, plain, eos, add_generation_prompt), true}};
        return render_chat_segments(*format_, plain, eos, add_generation_prompt);
    }
    const jinja::Template& chat_template = compiled();
    if (mark_assistant && !chat_template.has_generation())
        fail(ErrorKind::kConfig, source_name_ + ": --assistant_only_loss True needs a chat template that marks what "
                                                "the assistant wrote with {% generation %} ... {% endgeneration %} "
                                                "(TRL's requirement); this one has none. Use such a template, or "
                                                "--chat_template_format chatml|zephyr");
    jinja::Rendered rendered;
    try {
        rendered = chat_template.render(template_variables(messages, record, tokenizer, add_generation_prompt, where));
    } catch (const Error& e) {
        fail(e.kind(), where + ": " + e.what());
    }
    if (!mark_assistant) return {{std::move(rendered.text), true}};
    std::vector<ChatSegment> segments;
    size_t at = 0;
    for (const auto& [begin, end] : rendered.generation_spans) {
        if (begin < at) continue;  // a span nested in or overlapping the previous one
        if (begin > at) segments.push_back({rendered.text.substr(at, begin - at), false});
        if (end > begin) segments.push_back({rendered.text.substr(begin, end - begin), true});
        at = end;
    }
    if (at < rendered.text.size()) segments.push_back({rendered.text.substr(at), false});
    return segments;
}

}  // namespace ftl::tokenizer
