// tokenizer.json loading errors and small hand-checked encodings. The bulk of the proof is the
// parity test against HF tokenizers (tests/parity/test_tokenizer_parity.py).
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "catch.h"
#include "jinja/template.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

using namespace ftl;
using namespace ftl::tokenizer;

namespace {
// A four-token BPE with byte fallback for 'A', a template adding <s>, and a metaspace-like normalizer.
std::string tiny(const std::string& replace_key = "", const std::string& replace_value = "") {
    std::string json = R"({
      "added_tokens": [{"id": 5, "content": "<s>", "special": true, "normalized": false}],
      "normalizer": null, "pre_tokenizer": null,
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
      "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
      "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": true,
                "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<0x41>": 4, "<s>": 5},
                "merges": [["a", "b"]]}})";
    if (!replace_key.empty()) {
        const size_t at = json.find(replace_key);
        REQUIRE(at != std::string::npos);
        json.replace(at, replace_key.size(), replace_value);
    }
    return json;
}
}  // namespace

TEST_CASE("a tiny BPE: merges, byte fallback, fused unk, template, decode", "[tokenizer]") {
    auto tok = Tokenizer::from_json_text(tiny(), "tiny.json");
    CHECK(tok.encode("abab") == std::vector<int32_t>{3, 3});
    CHECK(tok.encode("aAb") == std::vector<int32_t>{1, 4, 2});
    CHECK(tok.encode("xyb") == std::vector<int32_t>{0, 2});  // x and y fuse into one <unk>
    CHECK(tok.encode("ab<s>a", true) == std::vector<int32_t>{5, 3, 5, 1});
    CHECK(tok.decode({3, 4, 5}, false) == "abA<s>");
    CHECK(tok.decode({3, 4, 5}, true) == "abA");
    CHECK(tok.size() == 6);
    CHECK(tok.add_tokens({"<|im_end|>", "ab"}, true) == 1);
    CHECK(tok.token_to_id("<|im_end|>") == 6);
    CHECK(tok.token_to_id("ab") == 3);
    CHECK(tok.encode("a<|im_end|>") == std::vector<int32_t>{1, 6});
}

TEST_CASE("offsets: byte ranges of the input, whole characters, (0, 0) for template tokens", "[tokenizer]") {
    auto tok = Tokenizer::from_json_text(tiny(), "tiny.json");
    auto ranges = [](const Encoding& e) {
        std::vector<std::pair<uint32_t, uint32_t>> out;
        for (const auto& r : e.offsets) out.emplace_back(r.begin, r.end);
        return out;
    };
    using R = std::vector<std::pair<uint32_t, uint32_t>>;
    // "ab" merges; "A" falls back to a byte token; "xy" fuses into one <unk> covering both.
    const Encoding plain = tok.encode_with_offsets("abAxyb<s>", true);
    CHECK(plain.ids == std::vector<int32_t>{5, 3, 4, 0, 2, 5});
    CHECK(plain.ids == tok.encode("abAxyb<s>", true));
    CHECK(ranges(plain) == R{{0, 0}, {0, 2}, {2, 3}, {3, 5}, {5, 6}, {6, 9}});
    // A two-byte character with no token: <unk> spans both bytes.
    CHECK(ranges(tok.encode_with_offsets("a\xC3\xA9" "b")) == R{{0, 1}, {1, 3}, {3, 4}});
    // A Prepend/Replace normalizer (Llama-2's): the inserted '▁' belong to the character they
    // stand before or replace.
    auto legacy = Tokenizer::from_json_text(
        tiny("\"normalizer\": null", R"("normalizer": {"type": "Sequence", "normalizers": [
              {"type": "Prepend", "prepend": "_"}, {"type": "Replace", "pattern": {"String": " "}, "content": "_"}]})"),
        "legacy.json");
    CHECK(ranges(legacy.encode_with_offsets("ab b")) == R{{0, 1}, {0, 2}, {2, 3}, {3, 4}});
}

TEST_CASE("ids need not be dense: a sparse vocab id costs no table up to it", "[tokenizer]") {
    // fuzz_tokenizer_json once ran out of memory on such a file (a dense id -> token table).
    auto tok = Tokenizer::from_json_text(tiny("\"b\": 2,", "\"b\": 2147483000,"), "t.json");
    CHECK(tok.encode("b") == std::vector<int32_t>{2147483000});
    CHECK(tok.id_to_token(2147483000) == std::optional<std::string>("b"));
    CHECK(tok.id_to_token(2) == std::nullopt);
    CHECK(tok.size() == 2147483001);
}

TEST_CASE("broken tokenizer.json files are clear errors", "[tokenizer]") {
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text("{\"model\": ", "t.json"), ErrorKind::kConfig, "t.json", "malformed");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"type\": \"BPE\"", "\"type\": \"Unigram\""), "t.json"),
                      ErrorKind::kConfig, "model.type", "Unigram", "BPE");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("[[\"a\", \"b\"]]", "[[\"a\", \"zz\"]]"), "t.json"),
                      ErrorKind::kConfig, "merges[0]", "missing from the vocab");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"normalizer\": null", "\"normalizer\": {\"type\": \"Lowercase\"}"), "t.json"),
                      ErrorKind::kConfig, "t.json: normalizer", "Lowercase", "supported");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"pre_tokenizer\": null",
                          R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"})"),
                          "t.json"),
                      ErrorKind::kConfig, "pre_tokenizer.pattern", "invalid regex");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"ids\": [5]", "\"ids\": [\"five\"]"), "t.json"),
                      ErrorKind::kConfig, "t.json");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"a\": 1,", "\"a\": -1,"), "t.json"), ErrorKind::kConfig,
                      "vocab['a']", "token id", "-1");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"a\": 1,", "\"a\": 2147483647,"), "t.json"), ErrorKind::kConfig,
                      "vocab['a']", "[0, 2^31-1)", "2147483647");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("{\"id\": 5,", "{\"id\": -5,"), "t.json"), ErrorKind::kConfig,
                      "added_tokens[0].id", "-5");
    // A number beyond int64 parses as a double; converting that to an id was undefined behaviour (fuzz_tokenizer_json).
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("\"ids\": [5]", "\"ids\": [3333333333333333333333333333335]"), "t.json"),
                      ErrorKind::kConfig, "special_tokens['<s>'].ids", "token id");
    FTL_REQUIRE_ERROR(Tokenizer::from_json_text(tiny("{\"type\": \"Fuse\"}", "{\"type\": \"Strip\", \"content\": \" \", \"start\": \"x\"}"), "t.json"),
                      ErrorKind::kConfig, "decoder");
    FTL_REQUIRE_ERROR(Tokenizer::from_file("/nonexistent/tokenizer.json"), ErrorKind::kConfig, "cannot read");
}

TEST_CASE("chat formats render as peft's templates do", "[tokenizer]") {
    std::vector<ChatMessage> chat{{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
    CHECK(render_chat(ChatFormat::kChatml, chat, "<|im_end|>") ==
          "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\nHello!<|im_end|>\n");
    CHECK(render_chat(ChatFormat::kZephyr, chat, "</s>", true) ==
          "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|assistant|>\n");
    FTL_REQUIRE_ERROR(parse_chat_format("llama", "--chat_template_format"), ErrorKind::kConfig, "chatml, zephyr");
    // The native rendering is peft's template's, as jinja/ renders the template text.
    jinja::List messages;
    for (const auto& m : chat) messages.push_back(jinja::Value::dict({{"role", jinja::Value(m.role)}, {"content", jinja::Value(m.content)}}));
    for (const auto& [format, eos] : {std::pair{ChatFormat::kChatml, "<|im_end|>"}, std::pair{ChatFormat::kZephyr, "</s>"}})
        for (bool prompt : {false, true}) {
            const jinja::Dict variables{{"messages", jinja::Value::list(messages)},
                                        {"eos_token", jinja::Value(eos)},
                                        {"add_generation_prompt", jinja::Value(prompt)}};
            CHECK(jinja::Template::parse(chat_template_text(format), "peft").render(variables).text ==
                  render_chat(format, chat, eos, prompt));
        }
}

TEST_CASE("tokenizer_class: the classes transformers 5 rebuilds, their defaults, and a non-BPE file", "[tokenizer]") {
    char templ[] = "/tmp/ftl_tokenizer_test_XXXXXX";
    const std::string dir = ::mkdtemp(templ);
    { std::ofstream(dir + "/tokenizer.json") << tiny(); }
    // LlamaTokenizer: Metaspace "first" (the file has no pre-tokenizer), <s> </s> <unk> by default
    // where the config names none; "</s>" is new, so it is added after the vocabulary.
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "LlamaTokenizerFast"})"; }
    const HfTokenizer llama = HfTokenizer::load(dir);
    // "▁ab": the class's BPE has no unk token, so the unknown "▁" is dropped (as tokenizers drops it).
    CHECK(llama.encode("ab", false) == std::vector<int32_t>{3});
    CHECK(llama.encode("ab a", false) == std::vector<int32_t>{3, 1});
    CHECK((llama.bos_token() == "<s>" && llama.eos_token() == "</s>" && llama.unk_token() == "<unk>"));
    CHECK(llama.eos_id() == 6);
    // A null in the config is no token, not the class's default.
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "LlamaTokenizer", "eos_token": null})"; }
    CHECK_FALSE(HfTokenizer::load(dir).eos_token());
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "LlamaTokenizer", "legacy": "yes"})"; }
    FTL_REQUIRE_ERROR(HfTokenizer::load(dir), ErrorKind::kConfig, "tokenizer_config.json", "legacy", "true or false");
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "PreTrainedTokenizerFast"})"; }
    CHECK(HfTokenizer::load(dir).encode("ab a", false) == std::vector<int32_t>{3, 0, 1});  // the file: unk kept
    { std::ofstream(dir + "/tokenizer.json") << tiny(R"("type": "BPE")", R"("type": "WordPiece")"); }
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "GemmaTokenizer"})"; }
    FTL_REQUIRE_ERROR(HfTokenizer::load(dir), ErrorKind::kConfig, "tokenizer_class GemmaTokenizer", "not BPE");
    std::filesystem::remove_all(dir);
}

TEST_CASE("tokenizer_config.json's model_max_length: transformers' int(1e30) means no limit", "[tokenizer]") {
    char templ[] = "/tmp/ftl_tokenizer_test_XXXXXX";
    const std::string dir = ::mkdtemp(templ);
    { std::ofstream(dir + "/tokenizer.json") << tiny(); }
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"model_max_length": 1000000000000000019884624838656})"; }
    CHECK(HfTokenizer::load(dir).model_max_length() == std::nullopt);
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"model_max_length": 1024})"; }
    CHECK(HfTokenizer::load(dir).model_max_length() == 1024);
    { std::ofstream(dir + "/tokenizer_config.json") << R"({"model_max_length": -3})"; }
    FTL_REQUIRE_ERROR(HfTokenizer::load(dir), ErrorKind::kConfig, "tokenizer_config.json", "model_max_length", "-3");
    std::filesystem::remove_all(dir);
}
