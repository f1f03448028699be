#include "tokenizer/tokenizer.h"

#include <map>
#include <nlohmann/json.hpp>

#include "tokenizer/text.h"
#include "util/files.h"
#include "util/error.h"

namespace ftl::tokenizer {
namespace {

using nlohmann::json;

// Leftmost-longest matching of added tokens (HF uses an Aho-Corasick automaton with
// MatchKind::LeftmostLongest; this trie gives the same matches).
class TokenTrie {
public:
    void add(const std::string& pattern, size_t token_index) {
        if (pattern.empty()) return;
        size_t node = 0;
        for (unsigned char c : pattern) {
            auto it = nodes_[node].next.find(c);
            if (it == nodes_[node].next.end()) {
                nodes_[node].next[c] = nodes_.size();
                nodes_.push_back({});
                node = nodes_.size() - 1;
            } else {
                node = it->second;
            }
        }
        nodes_[node].token = static_cast<long>(token_index);
        first_byte_[static_cast<unsigned char>(pattern[0])] = true;
        empty_ = false;
    }
    bool empty() const { return empty_; }
    // The leftmost match at or after `from`: (begin, end, token index), or begin == npos.
    std::tuple<size_t, size_t, size_t> find(std::string_view text, size_t from) const {
        for (size_t i = from; i < text.size(); ++i) {
            if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
            size_t node = 0, best_end = 0;
            long best = -1;
            for (size_t j = i; j < text.size(); ++j) {
                auto it = nodes_[node].next.find(static_cast<unsigned char>(text[j]));
                if (it == nodes_[node].next.end()) break;
                node = it->second;
                if (nodes_[node].token >= 0) {
                    best = nodes_[node].token;
                    best_end = j + 1;
                }
            }
            if (best >= 0) return {i, best_end, static_cast<size_t>(best)};
        }
        return {std::string_view::npos, 0, 0};
    }

private:
    struct Node {
        std::map<unsigned char, size_t> next;
        long token = -1;
    };
    std::vector<Node> nodes_{Node{}};
    bool first_byte_[256] = {};
    bool empty_ = true;
};

bool flag(const json& j, const char* key, bool fallback) {
    return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : fallback;
}

}  // namespace

struct Tokenizer::Impl {
    std::unique_ptr<Normalizer> normalizer;
    std::unique_ptr<PreTokenizer> pre_tokenizer;
    std::unique_ptr<PostProcessor> post_processor;
    std::unique_ptr<Decoder> decoder;
    std::optional<BpeModel> model;
    TokenTrie raw_trie, normalized_trie;
    // Rust regex's \w (HF checks single_word with it): Alphabetic, marks, decimal digits,
    // connector punctuation, joiners. PCRE2's UCP \w would also take other numbers such as '½'.
    Regex word_char{R"([\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])", "word character"};
    Regex leading_space{R"(\A\s+)", "leading space"};
    Regex trailing_space{R"(\s+\z)", "trailing space"};
    std::map<int32_t, size_t> added_by_id;  // id -> index in added_
    // What decode shows for each added token: HF keeps a `normalized` token in its normalized
    // form ("<think>" under a Prepend("▁") normalizer is "▁<think>") and runs it through the decoder.
    std::vector<std::string> decode_form;
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
    const auto text = read_text_file(path);
    if (!text) fail(ErrorKind::kConfig, path + ": cannot read the tokenizer file");
    return from_json_text(*text, path);
}

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& source) {
    // The stage parsers check the keys they know; a value of an unexpected JSON type deeper down
    // surfaces as nlohmann's type error, which still becomes a message naming the file.
    try {
        return parse(text, source);
    } catch (const json::exception& e) {
        fail(ErrorKind::kConfig, source + ": a value has the wrong JSON type for a tokenizer.json (" + e.what() + ")");
    }
}

Tokenizer Tokenizer::parse(const std::string& text, const std::string& source) {
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
        fail(ErrorKind::kConfig, source + ": not a JSON object (malformed tokenizer.json)");
    Tokenizer t;
    auto section = [&](const char* key) { return j.contains(key) ? j[key] : json(); };
    const json model = section("model");
    if (!model.is_object()) fail(ErrorKind::kConfig, source + ": model: must be an object");
    const std::string type = model.value("type", model.contains("merges") ? "BPE" : "");
    if (type != "BPE")
        fail(ErrorKind::kConfig, source + ": model.type: '" + type +
                                     "' is not supported (this build reads BPE tokenizers: Llama, Mistral, Qwen2)");
    t.impl_->model = BpeModel::from_json(model, source + ": model");
    t.impl_->normalizer = make_normalizer(section("normalizer"), source + ": normalizer");
    t.impl_->pre_tokenizer = make_pre_tokenizer(section("pre_tokenizer"), source + ": pre_tokenizer");
    t.impl_->post_processor = make_post_processor(section("post_processor"), source + ": post_processor");
    t.impl_->decoder = make_decoder(section("decoder"), source + ": decoder");

    const json added = section("added_tokens");
    if (!added.is_null() && !added.is_array()) fail(ErrorKind::kConfig, source + ": added_tokens: must be a list");
    if (added.is_array()) {
        for (size_t i = 0; i < added.size(); ++i) {
            const json& a = added[i];
            if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
                !a["content"].is_string())
                fail(ErrorKind::kConfig, source + ": added_tokens[" + std::to_string(i) +
                                             "]: needs an integer 'id' and a string 'content'");
            AddedToken token;
            token.id = token_id(a["id"], source + ": added_tokens[" + std::to_string(i) + "].id");
            token.content = a["content"].get<std::string>();
            token.single_word = flag(a, "single_word", false);
            token.lstrip = flag(a, "lstrip", false);
            token.rstrip = flag(a, "rstrip", false);
            token.normalized = flag(a, "normalized", true);
            token.special = flag(a, "special", false);
            t.added_.push_back(std::move(token));
        }
    }
    t.rebuild_matchers();
    return t;
}

void Tokenizer::rebuild_matchers() {
    impl_->raw_trie = TokenTrie();
    impl_->normalized_trie = TokenTrie();
    impl_->added_by_id.clear();
    impl_->decode_form.clear();
    for (size_t i = 0; i < added_.size(); ++i) {
        impl_->added_by_id[added_[i].id] = i;
        if (added_[i].normalized) {
            // Matched against normalized text, so its pattern is its own normalized form.
            Piece pattern{added_[i].content, false, {}};
            if (impl_->normalizer) impl_->normalizer->normalize(pattern);
            impl_->normalized_trie.add(pattern.text, i);
            impl_->decode_form.push_back(pattern.text);
        } else {
            impl_->raw_trie.add(added_[i].content, i);
            impl_->decode_form.push_back(added_[i].content);
        }
    }
}

void Tokenizer::split_added(std::vector<Piece>& pieces, std::vector<std::optional<int32_t>>& token_of,
                            bool normalized) const {
    const TokenTrie& trie = normalized ? impl_->normalized_trie : impl_->raw_trie;
    if (trie.empty()) return;
    std::vector<Piece> out_pieces;
    std::vector<std::optional<int32_t>> out_tokens;
    auto ends_with_word = [&](std::string_view s) {
        if (s.empty()) return false;
        size_t b = s.size() - 1;
        while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        return !impl_->word_char.find_all(s.substr(b)).empty();
    };
    auto starts_with_word = [&](std::string_view s) {
        if (s.empty()) return false;
        return !impl_->word_char.find_all(s.substr(0, utf8_length(static_cast<unsigned char>(s[0])))).empty();
    };
    for (size_t p = 0; p < pieces.size(); ++p) {
        if (token_of[p]) {
            out_pieces.push_back(std::move(pieces[p]));
            out_tokens.push_back(token_of[p]);
            continue;
        }
        const std::string& text = pieces[p].text;
        auto emit = [&](size_t b, size_t e, std::optional<int32_t> token) {
            if (e > b) {
                out_pieces.push_back(slice(pieces[p], b, e));
                out_tokens.push_back(token);
            }
        };
        size_t done = 0, search = 0;
        while (true) {
            auto [begin, end, index] = trie.find(text, search);
            if (begin == std::string_view::npos) break;
            search = end;
            const AddedToken& token = added_[index];
            const std::string_view view(text);
            if (token.single_word && (ends_with_word(view.substr(0, begin)) || starts_with_word(view.substr(end))))
                continue;
            if (token.lstrip) {
                auto spaces = impl_->trailing_space.find_all(view.substr(0, begin));
                if (!spaces.empty()) begin = std::max(spaces.back().first, done);
            }
            if (token.rstrip) {
                auto spaces = impl_->leading_space.find_all(view.substr(end));
                if (!spaces.empty()) end += spaces.front().second;
            }
            emit(done, begin, std::nullopt);
            emit(begin, end, token.id);
            done = end;
            search = std::max(search, end);
        }
        emit(done, text.size(), std::nullopt);
    }
    pieces = std::move(out_pieces);
    token_of = std::move(out_tokens);
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool add_special_tokens) const {
    return run(input, add_special_tokens, /*track=*/false, /*post_process=*/true).ids;
}

Encoding Tokenizer::encode_with_offsets(std::string_view input, bool add_special_tokens, bool post_process) const {
    return run(input, add_special_tokens, /*track=*/true, post_process);
}

Encoding Tokenizer::run(std::string_view input, bool add_special_tokens, bool track, bool post_process) const {
    std::string text = is_valid_utf8(input) ? std::string(input) : utf8_lossy(input);
    std::vector<Piece> pieces;
    std::vector<std::optional<int32_t>> token_of;
    if (!text.empty()) {
        pieces.push_back(track ? tracked_piece(std::move(text), 0) : Piece{std::move(text), true, {}});
        token_of.push_back(std::nullopt);
    }
    std::string tracked_text = track && !pieces.empty() ? pieces[0].text : std::string();
    split_added(pieces, token_of, /*normalized=*/false);
    if (impl_->normalizer)
        for (size_t i = 0; i < pieces.size(); ++i)
            if (!token_of[i]) impl_->normalizer->normalize(pieces[i]);
    split_added(pieces, token_of, /*normalized=*/true);

    Encoding encoding;
    encoding.tracked = track;
    encoding.text = std::move(tracked_text);
    std::vector<BpeModel::Span> spans;
    for (size_t i = 0; i < pieces.size(); ++i) {
        if (token_of[i]) {
            encoding.ids.push_back(*token_of[i]);
            if (track) {
                encoding.tokens.push_back(pieces[i].text);  // as matched, with what lstrip/rstrip took
                encoding.offsets.push_back(origin_of(pieces[i], 0, pieces[i].text.size()));
            }
            continue;
        }
        std::vector<Piece> words{std::move(pieces[i])};
        if (impl_->pre_tokenizer) impl_->pre_tokenizer->split(words);
        for (const auto& w : words) {
            const size_t first = encoding.ids.size();
            spans.clear();
            impl_->model->tokenize(w.text, encoding.ids, track ? &spans : nullptr);
            if (!track) continue;
            for (size_t t = 0; t < spans.size(); ++t) {
                encoding.tokens.push_back(*impl_->model->id_to_token(encoding.ids[first + t]));
                encoding.offsets.push_back(origin_of(w, spans[t].first, spans[t].second));
            }
        }
    }
    if (post_process && impl_->post_processor) impl_->post_processor->process(encoding, add_special_tokens);
    return encoding;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    for (int32_t id : ids) {
        auto added = impl_->added_by_id.find(id);
        if (added != impl_->added_by_id.end()) {
            if (!(skip_special_tokens && added_[added->second].special))
                tokens.push_back(impl_->decode_form[added->second]);
            continue;
        }
        if (const std::string* token = impl_->model->id_to_token(id)) {
            if (skip_special_tokens) {
                bool special = false;
                for (const auto& a : added_) special = special || (a.special && a.content == *token);
                if (special) continue;
            }
            tokens.push_back(*token);
        }
    }
    if (!impl_->decoder) {
        std::string out;
        for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
        return out;
    }
    impl_->decoder->decode_chain(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    for (const auto& a : added_)
        if (a.content == token) return a.id;
    return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
    auto added = impl_->added_by_id.find(id);
    if (added != impl_->added_by_id.end()) return impl_->decode_form[added->second];
    if (const std::string* token = impl_->model->id_to_token(id)) return *token;
    return std::nullopt;
}

int32_t Tokenizer::size() const {
    int32_t top = impl_->model->max_id();
    for (const auto& a : added_) top = std::max(top, a.id);
    return top + 1;
}

int Tokenizer::add_tokens(const std::vector<std::string>& contents, bool special) {
    int added_count = 0;
    for (const auto& content : contents) {
        bool found = false;
        for (auto& a : added_) {
            if (a.content == content) {
                a.special = a.special || special;
                found = true;
            }
        }
        if (found) continue;
        AddedToken token;
        token.content = content;
        token.special = special;
        token.normalized = !special;
        if (auto id = impl_->model->token_to_id(content)) {
            token.id = *id;
        } else {
            token.id = size();
            ++added_count;
        }
        added_.push_back(std::move(token));
    }
    rebuild_matchers();
    return added_count;
}

}  // namespace ftl::tokenizer
