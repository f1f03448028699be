// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}), with the semantics of HF
// tokenizers' models/bpe: a word is split into characters (unknown ones become <0xNN> byte tokens
// with byte_fallback, else the unk token, fused when fuse_unk), then the pair with the lowest
// merge rank is merged first (leftmost on ties) until no listed pair remains.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ftl::tokenizer {

class BpeModel {
public:
    // `model` is the "model" object of tokenizer.json; `where` names it in errors.
    static BpeModel from_json(const nlohmann::json& model, const std::string& where);

    // Byte range [first, second) of a token in its word.
    using Span = std::pair<uint32_t, uint32_t>;

    // Appends the ids of one pre-tokenized word and, when `spans` is given, the bytes of the
    // word each token stands for (a character with no token and no unk token has none).
    void tokenize(std::string_view word, std::vector<int32_t>& ids, std::vector<Span>* spans = nullptr) const;

    std::optional<int32_t> token_to_id(std::string_view token) const;
    const std::string* id_to_token(int32_t id) const;  // nullptr when the id is not in the vocab
    int32_t vocab_size() const { return static_cast<int32_t>(vocab_.size()); }
    int32_t max_id() const { return max_id_; }

private:
    struct Merge {
        int32_t rank;
        int32_t new_id;
    };
    static uint64_t pair_key(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }
    struct Tokens {
        std::vector<int32_t> ids;
        std::vector<Span> spans;
    };
    Tokens merge_word(std::string_view word) const;

    std::unordered_map<std::string, int32_t> vocab_;
    // id -> key in vocab_; a map, since ids need not be dense (a file may name id 2^31-1).
    std::unordered_map<int32_t, const std::string*> by_id_;
    std::unordered_map<uint64_t, Merge> merges_;
    std::optional<std::string> unk_token_;
    std::string continuing_subword_prefix_, end_of_word_suffix_;
    bool byte_fallback_ = false;
    bool fuse_unk_ = false;
    bool ignore_merges_ = false;
    int32_t byte_ids_[256];  // <0xNN> ids, -1 when absent
    int32_t max_id_ = -1;
    mutable std::unordered_map<std::string, Tokens> cache_;
};

}  // namespace ftl::tokenizer
