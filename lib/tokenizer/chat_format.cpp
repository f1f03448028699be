#include "tokenizer/chat_format.h"

#include "util/error.h"

namespace ftl::tokenizer {
namespace {

// peft/examples/sft/utils.py DEFAULT_CHATML_CHAT_TEMPLATE and DEFAULT_ZEPHYR_CHAT_TEMPLATE.
const std::string kChatmlTemplate =
    "{% for message in messages %}\n{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% if loop.last and add_generation_prompt %}{{'<|im_start|>assistant\n' }}"
    "{% endif %}{% endfor %}";
const std::string kZephyrTemplate =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + "
    "message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

}  // namespace

ChatFormat parse_chat_format(const std::string& name, const std::string& where) {
    if (name == "chatml") return ChatFormat::kChatml;
    if (name == "zephyr") return ChatFormat::kZephyr;
    fail(ErrorKind::kConfig, where + ": '" + name + "' is not a chat format ftlaunch renders (use chatml, zephyr, "
                                                    "or none for a dataset that is already formatted)");
}

SpecialTokenOverrides chat_special_tokens(ChatFormat format) {
    SpecialTokenOverrides s;
    s.pad = "<pad>";
    s.bos = "<s>";
    if (format == ChatFormat::kChatml) {
        s.eos = "<|im_end|>";
        s.additional = {"<|im_start|>user", "<|im_start|>assistant", "<|im_start|>system", "<|im_end|>", "<s>", "<pad>"};
    } else {
        s.eos = "</s>";
        s.additional = {"<|user|>", "<|assistant|>", "<|system|>", "</s>", "<s>", "<pad>"};
    }
    return s;
}

const std::string& chat_template_text(ChatFormat format) {
    return format == ChatFormat::kChatml ? kChatmlTemplate : kZephyrTemplate;
}

std::vector<ChatSegment> render_chat_segments(ChatFormat format, const std::vector<ChatMessage>& messages,
                                              const std::string& eos_token, bool add_generation_prompt) {
    std::vector<ChatSegment> out;
    auto add = [&](std::string text, bool assistant) {
        if (!out.empty() && out.back().assistant == assistant) out.back().text += text;
        else out.push_back({std::move(text), assistant});
    };
    for (const auto& m : messages) {
        const bool assistant = m.role == "assistant";
        if (format == ChatFormat::kChatml) {
            add("<|im_start|>" + m.role + "\n", false);
            add(m.content + "<|im_end|>", assistant);
            add("\n", false);
        } else if (m.role == "user" || m.role == "system" || assistant) {
            add("<|" + m.role + "|>\n", false);
            add(m.content + eos_token, assistant);
            add("\n", false);
        }
    }
    if (add_generation_prompt && !messages.empty())
        add(format == ChatFormat::kChatml ? "<|im_start|>assistant\n" : "<|assistant|>\n", false);
    return out;
}

std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages, const std::string& eos_token,
                        bool add_generation_prompt) {
    std::string out;
    for (const auto& segment : render_chat_segments(format, messages, eos_token, add_generation_prompt))
        out += segment.text;
    return out;
}

}  // namespace ftl::tokenizer
