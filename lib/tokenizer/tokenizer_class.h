// The tokenizer classes transformers 5 rebuilds around a tokenizer.json.
//
// AutoTokenizer.from_pretrained picks the class tokenizer_config.json names (tokenizer_class,
// "...Fast" an alias of the same class). TokenizersBackend and PreTrainedTokenizerFast load
// tokenizer.json as it is; a class with its own constructor instead takes only the file's
// vocabulary, merges, post-processor and added tokens (convert_to_native_format) and builds its
// own BPE flags, normalizer, pre-tokenizer and decoder (transformers 5.24's tokenization_*.py):
//   LlamaTokenizer (Llama-2, Mistral v0.1-v0.3, TinyLlama, Phi-3): no normalizer, Metaspace("▁",
//     prepend_scheme: "never" without add_prefix_space, else "first", "always" when legacy),
//     split false; BPE fuse_unk, byte_fallback, no unk token; decoder Replace("▁", " "),
//     ByteFallback, Fuse, and Strip(" ", 1, 0) with add_prefix_space (default true).
//   GemmaTokenizer: Replace(" ", "▁"), Split(" ", merged_with_previous), BPE fuse_unk,
//     byte_fallback, unk_token; decoder Replace, ByteFallback, Fuse.
//   Qwen2Tokenizer: NFC, Split(Qwen2's regex, isolated) then ByteLevel(add_prefix_space, no
//     regex); BPE without unk; ByteLevel decoder.
//   GPT2Tokenizer (Phi-4, granite, SmolLM): no normalizer, ByteLevel(add_prefix_space) with
//     GPT-2's regex, whatever split the file had; BPE without unk; ByteLevel decoder.
// A Llama-2 tokenizer.json's legacy normalizer (Prepend "▁" to every stretch between special
// tokens) thus gives way to Metaspace "first": "</s>world" encodes "world", not "▁world".
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace ftl::tokenizer {

// What a class changes: the tokenizer.json text with its stages replaced, and the special tokens
// its constructor names by default (bos, eos, unk, pad, mask in transformers' attribute order;
// nullopt: none), which apply where tokenizer_config.json and special_tokens_map.json name none.
struct ClassRebuild {
    std::string json_text;
    std::optional<std::string> bos, eos, unk, pad, mask;
};

// nullopt for a class that keeps tokenizer.json as it is (or no tokenizer_class). `file_text` is
// tokenizer.json (parsed only for a class that rebuilds), `config` tokenizer_config.json
// (add_prefix_space, legacy, unk_token read from it); `config_path` names the file in errors.
std::optional<ClassRebuild> rebuild_for_class(const std::string& file_text, const nlohmann::json& config,
                                              const std::string& config_path);

}  // namespace ftl::tokenizer
