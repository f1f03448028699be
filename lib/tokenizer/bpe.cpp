#include "tokenizer/bpe.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "tokenizer/pipeline.h"
#include "tokenizer/text.h"
#include "util/error.h"

namespace ftl::tokenizer {
namespace {

// Words this long are not cached (HF's MAX_LENGTH), so a pathological input cannot grow it.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 20;

std::string optional_text(const nlohmann::json& model, const char* key, const std::string& where) {
    if (!model.contains(key) || model[key].is_null()) return {};
    if (!model[key].is_string()) fail(ErrorKind::kConfig, where + "." + key + ": must be a string or null");
    return model[key].get<std::string>();
}

bool optional_bool(const nlohmann::json& model, const char* key, const std::string& where) {
    if (!model.contains(key) || model[key].is_null()) return false;
    if (!model[key].is_boolean()) fail(ErrorKind::kConfig, where + "." + key + ": must be true or false");
    return model[key].get<bool>();
}

}  // namespace

BpeModel BpeModel::from_json(const nlohmann::json& model, const std::string& where) {
    BpeModel bpe;
    if (!model.contains("vocab") || !model["vocab"].is_object())
        fail(ErrorKind::kConfig, where + ".vocab: must be an object {token: id}");
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
        const int32_t id = token_id(*it, where + ".vocab['" + it.key() + "']");
        bpe.vocab_[it.key()] = id;
        bpe.max_id_ = std::max(bpe.max_id_, id);
    }
    bpe.by_id_.reserve(bpe.vocab_.size());
    for (const auto& [token, id] : bpe.vocab_) bpe.by_id_[id] = &token;

    bpe.continuing_subword_prefix_ = optional_text(model, "continuing_subword_prefix", where);
    bpe.end_of_word_suffix_ = optional_text(model, "end_of_word_suffix", where);
    std::string unk = optional_text(model, "unk_token", where);
    if (!unk.empty()) bpe.unk_token_ = unk;
    bpe.byte_fallback_ = optional_bool(model, "byte_fallback", where);
    bpe.fuse_unk_ = optional_bool(model, "fuse_unk", where);
    bpe.ignore_merges_ = optional_bool(model, "ignore_merges", where);
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        auto it = bpe.vocab_.find(name);
        bpe.byte_ids_[b] = it == bpe.vocab_.end() ? -1 : it->second;
    }

    // merges: ["a b", ...] (older files) or [["a", "b"], ...] (tokenizers >= 0.20).
    const nlohmann::json empty = nlohmann::json::array();
    const nlohmann::json& merges = model.contains("merges") ? model["merges"] : empty;
    if (!merges.is_array()) fail(ErrorKind::kConfig, where + ".merges: must be a list");
    const size_t prefix_len = bpe.continuing_subword_prefix_.size();
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& m = merges[rank];
        std::string a, b;
        if (m.is_string()) {
            const std::string s = m.get<std::string>();
            const size_t space = s.find(' ');
            if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
                fail(ErrorKind::kConfig, where + ".merges[" + std::to_string(rank) + "]: '" + s +
                                             "' must be two tokens separated by one space");
            a = s.substr(0, space);
            b = s.substr(space + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            a = m[0].get<std::string>();
            b = m[1].get<std::string>();
        } else {
            fail(ErrorKind::kConfig, where + ".merges[" + std::to_string(rank) + "]: must be \"a b\" or [\"a\", \"b\"]");
        }
        const std::string merged = a + (prefix_len && b.compare(0, prefix_len, bpe.continuing_subword_prefix_) == 0
                                             ? b.substr(prefix_len)
                                             : b);
        auto ia = bpe.vocab_.find(a), ib = bpe.vocab_.find(b), im = bpe.vocab_.find(merged);
        if (ia == bpe.vocab_.end() || ib == bpe.vocab_.end() || im == bpe.vocab_.end())
            fail(ErrorKind::kConfig, where + ".merges[" + std::to_string(rank) + "]: '" + a + "' + '" + b +
                                         "' uses a token missing from the vocab");
        bpe.merges_.emplace(pair_key(ia->second, ib->second),
                            Merge{static_cast<int32_t>(rank), im->second});
    }
    return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
    auto it = vocab_.find(std::string(token));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& ids, std::vector<Span>* spans) const {
    if (word.empty()) return;
    auto append = [&](const Tokens& tokens) {
        ids.insert(ids.end(), tokens.ids.begin(), tokens.ids.end());
        if (spans) spans->insert(spans->end(), tokens.spans.begin(), tokens.spans.end());
    };
    if (ignore_merges_) {
        if (auto id = token_to_id(word)) {
            append({{*id}, {{0u, static_cast<uint32_t>(word.size())}}});
            return;
        }
    }
    if (word.size() <= kMaxCachedWordBytes) {
        auto hit = cache_.find(std::string(word));
        if (hit != cache_.end()) {
            append(hit->second);
            return;
        }
    }
    Tokens tokens = merge_word(word);
    append(tokens);
    if (word.size() <= kMaxCachedWordBytes && cache_.size() < kMaxCacheEntries)
        cache_.emplace(std::string(word), std::move(tokens));
}

BpeModel::Tokens BpeModel::merge_word(std::string_view word) const {
    // 1. Characters -> symbols (a doubly linked list over a vector, as in HF's Word), each
    //    covering the bytes [begin, end) of the word.
    struct Symbol {
        int32_t id;
        int32_t prev, next;
        bool alive;
        uint32_t begin, end;
    };
    std::vector<Symbol> symbols;
    int32_t pending_unk = -1;  // an unk id waiting to be emitted (fused with following unknowns)
    uint32_t unk_begin = 0, unk_end = 0;
    auto push = [&](int32_t id, size_t begin, size_t end) {
        const int32_t index = static_cast<int32_t>(symbols.size());
        symbols.push_back({id, index - 1, index + 1, true, static_cast<uint32_t>(begin), static_cast<uint32_t>(end)});
    };
    auto flush_unk = [&] {
        if (pending_unk >= 0) push(pending_unk, unk_begin, unk_end);
        pending_unk = -1;
    };
    std::string piece;
    for (size_t i = 0; i < word.size();) {
        const size_t n = std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
        const size_t begin = i;
        piece.assign(word.substr(i, n));
        if (i > 0 && !continuing_subword_prefix_.empty()) piece.insert(0, continuing_subword_prefix_);
        if (i + n == word.size() && !end_of_word_suffix_.empty()) piece += end_of_word_suffix_;
        i += n;
        if (auto it = vocab_.find(piece); it != vocab_.end()) {
            flush_unk();
            push(it->second, begin, i);
            continue;
        }
        if (byte_fallback_) {
            bool all = true;
            for (size_t k = begin; k < i; ++k) all = all && byte_ids_[static_cast<unsigned char>(word[k])] >= 0;
            if (all) {
                // like HF: no unk flush here
                for (size_t k = begin; k < i; ++k) push(byte_ids_[static_cast<unsigned char>(word[k])], k, k + 1);
                continue;
            }
        }
        if (unk_token_) {
            auto it = vocab_.find(*unk_token_);
            if (it == vocab_.end())
                fail(ErrorKind::kConfig, "tokenizer.json: unk_token '" + *unk_token_ + "' is not in the vocab");
            if (pending_unk >= 0 && !fuse_unk_) flush_unk();
            if (pending_unk < 0) unk_begin = static_cast<uint32_t>(begin);
            unk_end = static_cast<uint32_t>(i);
            pending_unk = it->second;
        }
    }
    flush_unk();
    if (!symbols.empty()) symbols.back().next = -1;

    // 2. Merge: lowest rank first, then leftmost position (HF Word::merge_all).
    struct Candidate {
        int32_t rank, pos, new_id;
        bool operator<(const Candidate& o) const {  // priority_queue pops the largest
            return rank != o.rank ? rank > o.rank : pos > o.pos;
        }
    };
    std::priority_queue<Candidate> queue;
    auto consider = [&](int32_t left) {
        const int32_t right = symbols[static_cast<size_t>(left)].next;
        if (right < 0) return;
        auto m = merges_.find(pair_key(symbols[static_cast<size_t>(left)].id, symbols[static_cast<size_t>(right)].id));
        if (m != merges_.end()) queue.push({m->second.rank, left, m->second.new_id});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol& left = symbols[static_cast<size_t>(top.pos)];
        if (!left.alive || left.next < 0) continue;
        Symbol& right = symbols[static_cast<size_t>(left.next)];
        auto m = merges_.find(pair_key(left.id, right.id));
        if (m == merges_.end() || m->second.new_id != top.new_id) continue;  // stale entry
        left.id = top.new_id;
        left.end = right.end;
        right.alive = false;
        left.next = right.next;
        if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = top.pos;
        if (left.prev >= 0) consider(left.prev);
        consider(top.pos);
    }
    Tokens tokens;
    for (const Symbol& s : symbols) {
        if (!s.alive) continue;
        tokens.ids.push_back(s.id);
        tokens.spans.emplace_back(s.begin, s.end);
    }
    return tokens;
}

}  // namespace ftl::tokenizer
