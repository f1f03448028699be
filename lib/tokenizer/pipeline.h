// The stages of an HF tokenizer.json around the model, each built from its JSON object:
//   normalizer     text -> text                 (Sequence, Prepend, Replace, Strip, NFC/NFKC/NFD/NFKD)
//   pre_tokenizer  pieces -> smaller pieces      (Sequence, ByteLevel, Split, Metaspace, Digits)
//   post_processor ids -> ids with special ones  (TemplateProcessing, ByteLevel, Roberta/Bert, Sequence)
//   decoder        tokens -> text                (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)
// Semantics follow HF tokenizers (normalizers/, pre_tokenizers/, processors/, decoders/), each
// stage keeping a tracked piece's alignment to the original input (piece.h) as tokenizers does.
// Normalizers live in normalizers.cpp, pre-tokenizers in pre_tokenizers.cpp, the rest in pipeline.cpp.
// A stage type not listed is a clear error naming it and the supported ones.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/piece.h"

namespace ftl::tokenizer {

// The ids of one sequence. When offsets are tracked (`tracked`), also the text they index (the
// input, invalid UTF-8 replaced), each token's text (model vocabulary form; empty for the
// post-processor's special tokens) and its byte range in that text ((0, 0) for those special
// tokens, as tokenizers gives them).
struct Encoding {
    std::vector<int32_t> ids;
    bool tracked = false;
    std::string text;
    std::vector<std::string> tokens;
    std::vector<ByteRange> offsets;
};

// Puts special tokens `before` and `after` the sequence (offsets (0, 0), empty token texts).
void surround(Encoding& encoding, const std::vector<int32_t>& before, const std::vector<int32_t>& after);

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual void normalize(Piece& piece) const = 0;
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
    // With `add_special_tokens`, adds the special tokens around one sequence; ByteLevel's
    // trim_offsets also adjusts the offsets of a tracked encoding either way (as tokenizers does).
    virtual void process(Encoding& encoding, bool add_special_tokens) const = 0;
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
