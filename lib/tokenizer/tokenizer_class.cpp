#include "tokenizer/tokenizer_class.h"

#include "util/error.h"
#include "util/strings.h"

namespace ftl::tokenizer {
namespace {

using nlohmann::json;

// Qwen2Tokenizer's pre-tokenization pattern (transformers' PRETOKENIZE_REGEX, Qwen2's tokenizer.json).
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A boolean key of tokenizer_config.json, `fallback` when absent or null.
bool flag(const json& config, const char* key, bool fallback, const std::string& config_path) {
    if (!config.contains(key) || config[key].is_null()) return fallback;
    if (!config[key].is_boolean()) fail(ErrorKind::kConfig, config_path + ": " + std::string(key) + ": must be true or false");
    return config[key].get<bool>();
}

// A special token named in the config: its string or AddedToken content, else `fallback`.
std::string token_or(const json& config, const char* key, const std::string& fallback) {
    if (!config.contains(key)) return fallback;
    const json& v = config[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return fallback;
}

// The BPE model the class constructs over the file's vocabulary and merges.
void set_bpe(json& model, const json& unk, const json& affix, bool fuse_unk, bool byte_fallback) {
    model["dropout"] = nullptr;
    model["unk_token"] = unk;
    model["continuing_subword_prefix"] = affix;
    model["end_of_word_suffix"] = affix;
    model["fuse_unk"] = fuse_unk;
    model["byte_fallback"] = byte_fallback;
    model["ignore_merges"] = false;
}

json byte_level(bool add_prefix_space, bool use_regex) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json replace(const std::string& from, const std::string& to) {
    return {{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
}

// Byte-fallback decoding of "▁"-spaced pieces: Replace("▁", " "), ByteFallback, Fuse.
json metaspace_decoders() {
    return json::array({replace("\u2581", " "), {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
}

}  // namespace

std::optional<ClassRebuild> rebuild_for_class(const std::string& file_text, const json& config,
                                              const std::string& config_path) {
    std::string name = config.contains("tokenizer_class") && config["tokenizer_class"].is_string()
                           ? config["tokenizer_class"].get<std::string>()
                           : std::string();
    if (ends_with(name, "Fast")) name = name.substr(0, name.size() - 4);
    if (name != "LlamaTokenizer" && name != "GemmaTokenizer" && name != "Qwen2Tokenizer" && name != "GPT2Tokenizer")
        return std::nullopt;
    const json file = json::parse(file_text, nullptr, /*allow_exceptions=*/false);
    if (!file.is_object() || !file.contains("model") || !file["model"].is_object() || file["model"].value("type", "") != "BPE")
        fail(ErrorKind::kConfig, config_path + ": tokenizer_class " + name + " builds a BPE tokenizer, but tokenizer.json's "
                                 "model is not BPE");
    json rebuilt = file;
    json& model = rebuilt["model"];
    ClassRebuild out;
    if (name == "LlamaTokenizer") {
        const bool prefix = flag(config, "add_prefix_space", true, config_path);
        const bool legacy = flag(config, "legacy", false, config_path);
        set_bpe(model, nullptr, nullptr, /*fuse_unk=*/true, /*byte_fallback=*/true);
        rebuilt["normalizer"] = nullptr;
        rebuilt["pre_tokenizer"] = {{"type", "Metaspace"},
                                    {"replacement", "\u2581"},
                                    {"prepend_scheme", !prefix ? "never" : legacy ? "always" : "first"},
                                    {"split", false}};
        json decoders = metaspace_decoders();
        if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        rebuilt["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
        out.bos = "<s>";
        out.eos = "</s>";
        out.unk = "<unk>";
    } else if (name == "GemmaTokenizer") {
        set_bpe(model, token_or(config, "unk_token", "<unk>"), nullptr, /*fuse_unk=*/true, /*byte_fallback=*/true);
        rebuilt["normalizer"] = replace(" ", "\u2581");
        rebuilt["pre_tokenizer"] = {
            {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}};
        rebuilt["decoder"] = {{"type", "Sequence"}, {"decoders", metaspace_decoders()}};
        out.bos = "<bos>";
        out.eos = "<eos>";
        out.unk = "<unk>";
        out.pad = "<pad>";
        out.mask = "<mask>";
    } else if (name == "Qwen2Tokenizer") {
        set_bpe(model, nullptr, "", /*fuse_unk=*/false, /*byte_fallback=*/false);
        rebuilt["normalizer"] = {{"type", "NFC"}};
        rebuilt["pre_tokenizer"] = {
            {"type", "Sequence"},
            {"pretokenizers",
             json::array({{{"type", "Split"}, {"pattern", {{"Regex", kQwen2Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                          byte_level(flag(config, "add_prefix_space", false, config_path), /*use_regex=*/false)})}};
        rebuilt["decoder"] = byte_level(true, true);
        out.eos = out.unk = out.pad = "<|endoftext|>";
    } else {  // GPT2Tokenizer
        set_bpe(model, nullptr, "", /*fuse_unk=*/false, /*byte_fallback=*/false);
        rebuilt["normalizer"] = nullptr;
        rebuilt["pre_tokenizer"] = byte_level(flag(config, "add_prefix_space", false, config_path), /*use_regex=*/true);
        rebuilt["decoder"] = byte_level(true, true);
        out.bos = out.eos = out.unk = "<|endoftext|>";
    }
    out.json_text = rebuilt.dump(-1, ' ', false, json::error_handler_t::replace);
    return out;
}

}  // namespace ftl::tokenizer
