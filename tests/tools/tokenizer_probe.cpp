// Test helper for the tokenizer parity test (tests/parity/test_tokenizer_parity.py).
//
//   ftl_tokenizer_probe encode TOKENIZER_JSON CORPUS_JSONL OUTPUT_JSONL
//     Each input line is a JSON string; each output line is {"ids", "ids_special", "decoded",
//     "decoded_skip", "offsets", "offsets_special"}: ids without / with add_special_tokens,
//     decode of "ids" keeping / skipping special tokens, and encode_with_offsets' ranges of both
//     encodings in characters (as Python's tokenizers gives them).
//   ftl_tokenizer_probe folder MODEL_DIR CORPUS_JSONL OUTPUT_JSONL
//     The folder's tokenizer as AutoTokenizer loads it (HfTokenizer, its tokenizer_class
//     rebuilding the file's stages): per line the same fields as encode (offsets in characters)
//     and "size", "bos", "eos", "pad" (len(tokenizer) and the special ids, -1 when none).
//   ftl_tokenizer_probe chat MODEL_DIR FORMAT CONVERSATIONS_JSONL OUTPUT_JSONL
//     Loads the folder with FORMAT's special tokens (chatml|zephyr) as train.py does; each input
//     line is a list of {"role", "content"}; each output line is {"text", "ids", "size", "bos",
//     "eos", "pad", "additional"} (rendered text, its ids with add_special_tokens, len(tokenizer),
//     the special ids) and "assistant_mask": per token of the rendered text without special
//     tokens, 1 where --assistant_only_loss trains.
//   ftl_tokenizer_probe jinja TEMPLATE_FILE CASES_JSONL OUTPUT_JSONL
//     Each input line is an object of template variables; each output line is {"text", "spans"}
//     (the rendered text and its {% generation %} byte ranges) or {"error": message}.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/examples.h"
#include "jinja/template.h"
#include "util/error.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/hf_tokenizer.h"

using namespace ftl;
using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Byte ranges as character ranges of `text` (valid UTF-8).
json char_offsets(const std::string& text, const tokenizer::Encoding& encoding) {
    std::vector<size_t> chars_before(text.size() + 1, 0);
    size_t count = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        chars_before[i] = count;
        if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++count;
    }
    chars_before[text.size()] = count;
    json out = json::array();
    for (const auto& range : encoding.offsets) out.push_back({chars_before[range.begin], chars_before[range.end]});
    return out;
}

void encode_corpus(const char* tokenizer_json, const char* corpus, const char* output) {
    const auto tok = tokenizer::Tokenizer::from_file(tokenizer_json);
    std::ifstream in(corpus);
    std::ofstream out(output);
    std::string line;
    while (std::getline(in, line)) {
        const std::string text = json::parse(line).get<std::string>();
        const auto ids = tok.encode(text, false);
        const auto tracked = tok.encode_with_offsets(text, false);
        const auto tracked_special = tok.encode_with_offsets(text, true);
        out << dump({{"ids", ids},
                     {"ids_special", tok.encode(text, true)},
                     {"decoded", tok.decode(ids, false)},
                     {"decoded_skip", tok.decode(ids, true)},
                     {"offsets_ids", tracked.ids},
                     {"offsets", char_offsets(text, tracked)},
                     {"offsets_special", char_offsets(text, tracked_special)}})
            << "\n";
    }
}

void encode_with_folder(const char* dir, const char* corpus, const char* output) {
    const auto tok = tokenizer::HfTokenizer::load(dir);
    const json named = {{"size", tok.size()},
                        {"bos", tok.bos_id().value_or(-1)},
                        {"eos", tok.eos_id().value_or(-1)},
                        {"pad", tok.pad_id().value_or(-1)}};
    std::ifstream in(corpus);
    std::ofstream out(output);
    std::string line;
    while (std::getline(in, line)) {
        const std::string text = json::parse(line).get<std::string>();
        const auto plain = tok.encode_with_offsets(text, false);
        const auto special = tok.encode_with_offsets(text, true);
        json result = named;
        result.update({{"ids", plain.ids},
                       {"ids_special", tok.encode(text, true)},
                       {"decoded", tok.decode(plain.ids, false)},
                       {"decoded_skip", tok.decode(plain.ids, true)},
                       {"offsets", char_offsets(text, plain)},
                       {"offsets_special", char_offsets(text, special)}});
        out << dump(result) << "\n";
    }
}

void render_chats(const char* dir, const char* format_name, const char* conversations, const char* output) {
    const auto format = tokenizer::parse_chat_format(format_name, "FORMAT");
    const auto specials = tokenizer::chat_special_tokens(format);
    const auto tok = tokenizer::HfTokenizer::load(dir, specials);
    std::vector<int32_t> additional;
    for (const auto& s : specials.additional) additional.push_back(*tok.backend().token_to_id(s));
    std::ifstream in(conversations);
    std::ofstream out(output);
    std::string line;
    while (std::getline(in, line)) {
        std::vector<tokenizer::ChatMessage> messages;
        for (const auto& m : json::parse(line)) messages.push_back({m["role"], m["content"]});
        const std::string text = tokenizer::render_chat(format, messages, tok.eos_token().value_or(""));
        data::TextOptions assistant_only;
        assistant_only.chat = std::make_shared<const tokenizer::ChatRenderer>(format);
        assistant_only.assistant_only_loss = true;
        const json mask =
            data::tokenize_records({json{{"messages", json::parse(line)}}}, tok, assistant_only, "probe")[0].is_target;
        out << dump({{"text", text},
                     {"assistant_mask", mask},
                     {"ids", tok.encode(text, true)},
                     {"size", tok.size()},
                     {"bos", tok.bos_id().value_or(-1)},
                     {"eos", tok.eos_id().value_or(-1)},
                     {"pad", tok.pad_id().value_or(-1)},
                     {"additional", additional}})
            << "\n";
    }
}

void render_jinja(const char* template_file, const char* cases, const char* output) {
    std::ifstream source_in(template_file);
    const std::string source((std::istreambuf_iterator<char>(source_in)), std::istreambuf_iterator<char>());
    std::ifstream in(cases);
    std::ofstream out(output);
    std::string line;
    try {
        const auto compiled = jinja::Template::parse(source, "template");
        while (std::getline(in, line)) {
            const jinja::Value variables = jinja::Value::from_json(nlohmann::ordered_json::parse(line));
            try {
                const jinja::Rendered r = compiled.render(variables.as_dict());
                out << dump({{"text", r.text}, {"spans", r.generation_spans}}) << "\n";
            } catch (const Error& e) {
                out << dump({{"error", e.what()}}) << "\n";
            }
        }
    } catch (const Error& e) {  // the template itself is refused: every case says so
        while (std::getline(in, line)) out << dump({{"error", e.what()}}) << "\n";
    }
}

}  // namespace

int main(int argc, char** argv) try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "encode" && argc == 5) {
        encode_corpus(argv[2], argv[3], argv[4]);
    } else if (mode == "folder" && argc == 5) {
        encode_with_folder(argv[2], argv[3], argv[4]);
    } else if (mode == "chat" && argc == 6) {
        render_chats(argv[2], argv[3], argv[4], argv[5]);
    } else if (mode == "jinja" && argc == 5) {
        render_jinja(argv[2], argv[3], argv[4]);
    } else {
        std::fprintf(stderr, "usage: ftl_tokenizer_probe encode TOKENIZER_JSON CORPUS OUT | folder DIR CORPUS OUT | chat DIR FORMAT "
                             "CONVS OUT | jinja TEMPLATE CASES OUT\n");
        return 2;
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_tokenizer_probe: %s\n", e.what());
    return 1;
}
