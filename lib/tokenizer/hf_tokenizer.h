// A model folder's tokenizer as transformers loads it (AutoTokenizer on a tokenizer.json):
// tokenizer.json, rebuilt as its tokenizer_class rebuilds it (tokenizer_class.h), plus
// tokenizer_config.json (and special_tokens_map.json) for the named special tokens,
// add_bos_token / add_eos_token and the chat template.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ftl::tokenizer {

// Special tokens passed to from_pretrained (bos_token=..., additional_special_tokens=[...]);
// they replace the folder's values and are added to the vocabulary when missing.
struct SpecialTokenOverrides {
    std::optional<std::string> bos, eos, unk, pad;
    std::vector<std::string> additional;
};

class HfTokenizer {
public:
    // Throws ftl::Error(kConfig) naming the file when tokenizer.json is missing (a
    // SentencePiece-only folder says so) or a config value has the wrong type.
    static HfTokenizer load(const std::string& dir, const SpecialTokenOverrides& overrides = {});

    // transformers' tokenizer(text, add_special_tokens=...): the default adds BOS/EOS as the
    // post-processor says.
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
    // The same ids with each token's byte range in `text` (Tokenizer::encode_with_offsets; the
    // special tokens added here get (0, 0)).
    Encoding encode_with_offsets(std::string_view text, bool add_special_tokens = true) const;
    std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

    const Tokenizer& backend() const { return tokenizer_; }
    int32_t size() const { return tokenizer_.size(); }  // len(tokenizer)
    const std::optional<std::string>& bos_token() const { return bos_; }
    const std::optional<std::string>& eos_token() const { return eos_; }
    const std::optional<std::string>& pad_token() const { return pad_; }
    const std::optional<std::string>& unk_token() const { return unk_; }
    std::optional<int32_t> bos_id() const;
    std::optional<int32_t> eos_id() const;
    std::optional<int32_t> pad_id() const;
    const std::string& chat_template() const { return chat_template_; }
    // Where the chat template was read, for errors: ".../chat_template.jinja" or
    // ".../tokenizer_config.json: chat_template" (empty when the folder has none).
    const std::string& chat_template_origin() const { return chat_template_origin_; }
    std::optional<int64_t> model_max_length() const { return model_max_length_; }

    // What tokenizer.save_pretrained(dir) writes in transformers 5, as (file name, contents):
    // tokenizer.json with every added token, tokenizer_config.json with the special tokens as now
    // set (extra_special_tokens for the additional ones; the folder's other keys kept), and
    // chat_template.jinja when there is a template. AutoTokenizer.from_pretrained on the result
    // gives this tokenizer.
    std::vector<std::pair<std::string, std::string>> pretrained_files() const;

    // tokenizer.pad_token = tokenizer.eos_token (what the seed's train.py does without a chat format).
    void set_pad_to_eos() { pad_ = eos_; }
    // tokenizer.chat_template = ... (read from `origin`, which errors name).
    void set_chat_template(std::string jinja, std::string origin) {
        chat_template_ = std::move(jinja);
        chat_template_origin_ = std::move(origin);
    }

private:
    HfTokenizer(Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
    static HfTokenizer load_checked(const std::string& dir, const SpecialTokenOverrides& overrides);
    Tokenizer tokenizer_;
    std::optional<std::string> bos_, eos_, unk_, pad_;
    std::vector<std::string> additional_;  // additional special tokens passed to load
    std::string json_text_;                // tokenizer.json as read (rebuilt by its class)
    std::string config_text_;              // tokenizer_config.json as read (empty when absent)
    std::string chat_template_;
    std::string chat_template_origin_;
    std::optional<int64_t> model_max_length_;
    std::optional<std::vector<int32_t>> template_before_, template_after_;  // add_bos/eos override
};

}  // namespace ftl::tokenizer
