// The stages of an HF tokenizer.json around the model, each built from its JSON object:
//   normalizer     text -> text                 (Sequence, Prepend, Replace, Strip, NFC/NFKC/NFD/NFKD)
//   pre_tokenizer  pieces -> smaller pieces      (Sequence, ByteLevel, Split, Metaspace, Digits)
//   post_processor ids -> ids with special ones  (TemplateProcessing, ByteLevel, Roberta/Bert, Sequence)
//   decoder        tokens -> text                (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)
// Semantics follow HF tokenizers (normalizers/, pre_tokenizers/, processors/, decoders/).
// A stage type not listed is a clear error naming it and the supported ones.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ftl::tokenizer {

// A piece of the input on its way to the model. `at_start`: it begins at byte 0 of the original
// input (Metaspace's prepend_scheme "first" prepends only there).
struct Piece {
    std::string text;
    bool at_start = false;
};

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    // Replaces `pieces` by their splits; empty pieces are dropped.
    virtual void split(std::vector<Piece>& pieces) const = 0;
};

class PostProcessor {
public:
    virtual ~PostProcessor() = default;
    // Adds the special tokens around one sequence.
    virtual void process(std::vector<int32_t>& ids) const = 0;
};

class Decoder {
public:
    virtual ~Decoder() = default;
    virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Each returns nullptr for a JSON null; `where` names the object in errors ("tokenizer.json: normalizer").
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);

// A token id read from tokenizer.json: an integer in [0, 2^31-1) (so that the largest id + 1, the
// tokenizer's size, is an int32 too), else a config error naming `where` and the value.
int32_t token_id(const nlohmann::json& value, const std::string& where);

// Whether this build can apply Unicode normalization forms (NFC, ...): needs utf8proc.
bool unicode_normalization_available();

}  // namespace ftl::tokenizer
