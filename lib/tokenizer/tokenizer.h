// An HF tokenizer.json, encoded and decoded the way the `tokenizers` library does:
//   1. added tokens that are not `normalized` are cut out of the raw text (leftmost-longest);
//   2. every other piece is normalized, then the `normalized` added tokens are cut out of it;
//   3. the pre-tokenizer splits the pieces, the BPE model turns each into ids;
//   4. with add_special_tokens, the post-processor adds BOS/EOS-style tokens.
// Only BPE models are read (the Llama family's); anything else is a clear error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"

namespace ftl::tokenizer {

struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool single_word = false;  // only matches with no word character on either side
    bool lstrip = false;       // swallows the whitespace before it
    bool rstrip = false;       // swallows the whitespace after it
    bool normalized = true;    // matched in the normalized text (true) or the raw text (false)
    bool special = false;      // skipped by decode(skip_special_tokens=true)
};

class Tokenizer {
public:
    // Throws ftl::Error(kConfig) naming the file and the JSON path of what is wrong or unsupported.
    static Tokenizer from_file(const std::string& path);
    static Tokenizer from_json_text(const std::string& text, const std::string& source);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
    // The same ids with each token's text and byte range in `text` (tokenizers' Encoding
    // .tokens/.offsets, in bytes where Python gives characters); the post-processor's special
    // tokens get (0, 0). Invalid UTF-8 is replaced first, and the ranges count that text.
    // `post_process` false skips the post-processor (whose ByteLevel step trims offsets even
    // without special tokens), for a caller that replaces it.
    Encoding encode_with_offsets(std::string_view text, bool add_special_tokens = false, bool post_process = true) const;
    std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

    std::optional<int32_t> token_to_id(std::string_view token) const;
    std::optional<std::string> id_to_token(int32_t id) const;
    // len(tokenizer) in transformers: the largest id + 1 over the model vocab and added tokens.
    int32_t size() const;
    const std::vector<AddedToken>& added_tokens() const { return added_; }

    // Adds tokens the way transformers' add_tokens / add_special_tokens do: an existing token
    // keeps its id (and becomes special if asked); a new one gets the next free id. Returns the
    // number of new ids.
    int add_tokens(const std::vector<std::string>& contents, bool special);

private:
    Tokenizer();
    static Tokenizer parse(const std::string& text, const std::string& source);
    void rebuild_matchers();
    Encoding run(std::string_view text, bool add_special_tokens, bool track, bool post_process) const;
    void split_added(std::vector<Piece>& pieces, std::vector<std::optional<int32_t>>& token_of,
                     bool normalized) const;

    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::vector<AddedToken> added_;
};

}  // namespace ftl::tokenizer
