// Chat formats rendered natively (no Jinja): the ones the seed's train.py installs
// (peft/examples/sft/utils.py: chatml, zephyr, with their special tokens). A model's own
// template is rendered by jinja/ (see chat_renderer.h).
#pragma once

#include <string>
#include <vector>

#include "tokenizer/hf_tokenizer.h"

namespace ftl::tokenizer {

enum class ChatFormat { kChatml, kZephyr };

struct ChatMessage {
    std::string role;  // "system" | "user" | "assistant" (others are rendered as chatml does)
    std::string content;
};

// "chatml" | "zephyr" -> format; throws naming the flag and the choices otherwise.
ChatFormat parse_chat_format(const std::string& name, const std::string& where);

// The special tokens train.py passes to from_pretrained for the format (pad <pad>, bos <s>,
// eos <|im_end|> or </s>, and all six as additional special tokens).
SpecialTokenOverrides chat_special_tokens(ChatFormat format);

// The Jinja template train.py installs as tokenizer.chat_template (stored verbatim so a saved
// tokenizer_config.json matches what transformers writes).
const std::string& chat_template_text(ChatFormat format);

// apply_chat_template(messages, tokenize=False, add_generation_prompt=...).
// chatml:  "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n".
// zephyr:  "<|{role}|>\n{content}{eos}\n" for system/user/assistant (others skipped), then "<|assistant|>\n".
std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages, const std::string& eos_token,
                        bool add_generation_prompt = false);

// render_chat's text cut into consecutive pieces, those an assistant wrote marked: the content and
// its end marker ("<|im_end|>" / eos), as TRL's {% generation %} blocks mark them for
// assistant_only_loss (the generation prompt, when asked, unmarked). Joining the pieces gives
// render_chat's text.
struct ChatSegment {
    std::string text;
    bool assistant = false;
};
std::vector<ChatSegment> render_chat_segments(ChatFormat format, const std::vector<ChatMessage>& messages,
                                              const std::string& eos_token, bool add_generation_prompt = false);

}  // namespace ftl::tokenizer
