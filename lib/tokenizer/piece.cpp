#include "tokenizer/piece.h"

#include <algorithm>

#include "tokenizer/text.h"

namespace ftl::tokenizer {

Piece tracked_piece(std::string text, uint32_t base) {
    Piece piece{std::move(text), base == 0, {}};
    piece.origin.reserve(piece.text.size());
    for (size_t i = 0; i < piece.text.size();) {
        const size_t n = std::min(utf8_length(static_cast<unsigned char>(piece.text[i])), piece.text.size() - i);
        const ByteRange whole{base + static_cast<uint32_t>(i), base + static_cast<uint32_t>(i + n)};
        piece.origin.insert(piece.origin.end(), n, whole);
        i += n;
    }
    return piece;
}

Piece slice(const Piece& piece, size_t b, size_t e) {
    Piece out{piece.text.substr(b, e - b), piece.at_start && b == 0, {}};
    if (!piece.origin.empty())
        out.origin.assign(piece.origin.begin() + static_cast<long>(b), piece.origin.begin() + static_cast<long>(e));
    return out;
}

void prepend(Piece& piece, std::string_view prefix) {
    if (piece.text.empty() || prefix.empty()) return;
    piece.text.insert(0, prefix);
    if (!piece.origin.empty()) piece.origin.insert(piece.origin.begin(), prefix.size(), piece.origin.front());
}

void replace_matches(Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, std::string_view content) {
    if (matches.empty()) return;
    const bool tracked = !piece.origin.empty();
    std::string text;
    std::vector<ByteRange> origin;
    size_t last = 0;
    for (auto [b, e] : matches) {
        text.append(piece.text, last, b - last);
        text.append(content);
        if (tracked) {
            origin.insert(origin.end(), piece.origin.begin() + static_cast<long>(last),
                          piece.origin.begin() + static_cast<long>(b));
            // Inserted characters share the alignment before them: the match's last byte, or
            // nothing at the very start (tokenizers: (0, 0)) when the match is empty there.
            const ByteRange before = e > 0 ? piece.origin[e - 1] : ByteRange{};
            origin.insert(origin.end(), content.size(), before);
        }
        last = e;
    }
    text.append(piece.text, last);
    if (tracked) origin.insert(origin.end(), piece.origin.begin() + static_cast<long>(last), piece.origin.end());
    piece.text = std::move(text);
    piece.origin = std::move(origin);
}

void keep_range(Piece& piece, size_t b, size_t e) {
    piece.text = piece.text.substr(b, e - b);
    if (!piece.origin.empty())
        piece.origin = std::vector<ByteRange>(piece.origin.begin() + static_cast<long>(b),
                                              piece.origin.begin() + static_cast<long>(e));
}

ByteRange origin_of(const Piece& piece, size_t b, size_t e) { return {piece.origin[b].begin, piece.origin[e - 1].end}; }

}  // namespace ftl::tokenizer
