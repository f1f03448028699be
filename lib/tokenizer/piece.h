// A piece of tokenizer input on its way to the model, with where each of its bytes came from.
//
// HF tokenizers keep, for every byte of the normalized text, the byte range of the original
// input it stands for (NormalizedString's alignments); a token's offsets are then the range from
// the alignment of its first byte to that of its last. Pieces here carry the same alignment when
// the caller asks for offsets (Tokenizer::encode_with_offsets) and none otherwise, so plain
// encoding pays nothing. Every edit below keeps text and alignment in step with the rules of
// tokenizers' NormalizedString::transform_range: a character that replaces another takes its
// alignment, an inserted one that of the byte before it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ftl::tokenizer {

// A byte range [begin, end) of the original input.
struct ByteRange {
    uint32_t begin = 0, end = 0;
    bool operator==(const ByteRange& o) const { return begin == o.begin && end == o.end; }
};

// `at_start`: the piece begins at byte 0 of the original input (Metaspace's prepend_scheme
// "first" prepends only there). `origin`: one range per byte of `text`, or empty when untracked.
struct Piece {
    std::string text;
    bool at_start = false;
    std::vector<ByteRange> origin;
};

// A piece for `text` that tracks its alignment: each byte maps to its whole UTF-8 character at
// `base` + its position (so a byte-fallback token of a partial character still covers it all).
Piece tracked_piece(std::string text, uint32_t base);

// [b, e) of `piece` (at_start kept only for b == 0).
Piece slice(const Piece& piece, size_t b, size_t e);

// NormalizedString::prepend: `prefix` goes before the first character and, with it, takes that
// character's alignment. Nothing happens to an empty piece.
void prepend(Piece& piece, std::string_view prefix);

// NormalizedString::replace over `matches` (sorted, non-overlapping [b, e) byte ranges): each
// match becomes `content`, whose bytes all take the alignment of the match's last byte.
void replace_matches(Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, std::string_view content);

// Keeps the bytes [b, e) (a Strip): the rest is dropped with its alignment.
void keep_range(Piece& piece, size_t b, size_t e);

// The original range of the piece's bytes [b, e), e > b: from its first byte's start to its last
// byte's end (tokenizers' expand_alignments).
ByteRange origin_of(const Piece& piece, size_t b, size_t e);

}  // namespace ftl::tokenizer
