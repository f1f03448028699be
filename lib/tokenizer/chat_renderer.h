// How a conversation becomes text, as the seed's train.py and TRL's SFTTrainer render it:
//   --chat_template_format chatml|zephyr: train.py installs peft's template for the format;
//     ftlaunch renders those natively (chat_format.h);
//   --chat_template_format none: TRL applies the tokenizer's own chat_template
//     (tokenizer_config.json's, or chat_template.jinja), which ftlaunch renders with jinja/ as
//     apply_chat_template does: the special tokens (bos_token, eos_token, unk_token, pad_token),
//     the record's `tools` (a JSON string is parsed, as TRL does) and `chat_template_kwargs`,
//     messages with their None-valued keys dropped and reasoning copied under reasoning_content
//     and thinking (transformers' normalisation).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jinja/template.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/hf_tokenizer.h"

namespace ftl::tokenizer {

class ChatRenderer {
public:
    explicit ChatRenderer(ChatFormat format) : format_(format) {}
    // The tokenizer's template; `where` names it in errors (the model folder's file). The
    // template is compiled when the first conversation is rendered, so a model whose template
    // ftlaunch cannot read still trains on text datasets (TRL never compiles it there either).
    static ChatRenderer from_tokenizer(const HfTokenizer& tokenizer, std::string where);

    // `messages` (a list of message objects) rendered, with the generation prompt when asked;
    // `record` supplies `tools` and `chat_template_kwargs`. With `mark_assistant`, the text is cut
    // into segments, those an assistant wrote marked (TRL's assistant_only_loss): the native
    // formats mark each assistant's content and end marker, a Jinja template its
    // {% generation %} blocks. Without it, one segment marked as a target.
    // Throws ftl::Error(kConfig) naming `where` for a malformed message, a missing template, a
    // template error, or assistant marks asked of a template without {% generation %}.
    std::vector<ChatSegment> render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& record,
                                    const HfTokenizer& tokenizer, bool add_generation_prompt, bool mark_assistant,
                                    const std::string& where) const;

    // chatml / zephyr (train.py renders those to text that SFTTrainer then tokenizes with
    // --add_special_tokens); false for the tokenizer's template (apply_chat_template adds none).
    bool is_native() const { return format_.has_value(); }

private:
    ChatRenderer() = default;
    const jinja::Template& compiled() const;

    std::optional<ChatFormat> format_;
    std::string source_;  // the Jinja template, when format_ is empty
    std::string source_name_;
    // Compiled on first use (see from_tokenizer); rendering is single-threaded.
    mutable std::shared_ptr<const jinja::Template> template_;
};

}  // namespace ftl::tokenizer
