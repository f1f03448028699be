#include "tokenizer/hf_tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_class.h"
#include "util/files.h"
#include "util/error.h"

namespace ftl::tokenizer {
namespace {

using nlohmann::json;

// `text` as a JSON object (an empty text: an absent file, so an empty object).
json json_object(const std::string& text, const std::string& path) {
    if (text.empty()) return json::object();
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) fail(ErrorKind::kConfig, path + ": not a JSON object (malformed file)");
    return j;
}

json read_json_if_present(const std::string& path) { return json_object(read_text_file(path).value_or(""), path); }

// A special token entry: "text", {"content": "text", ...} (AddedToken dict), or null.
std::optional<std::string> token_entry(const json& j, const std::string& key, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    const json& v = j[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    fail(ErrorKind::kConfig, source + ": " + key + ": must be a token string or {\"content\": ...} (got " + v.dump() + ")");
}

}  // namespace

HfTokenizer HfTokenizer::load(const std::string& dir, const SpecialTokenOverrides& overrides) {
    try {
        return load_checked(dir, overrides);
    } catch (const json::exception& e) {
        fail(ErrorKind::kConfig, dir + "/tokenizer_config.json: a value has the wrong JSON type (" + e.what() + ")");
    }
}

HfTokenizer HfTokenizer::load_checked(const std::string& dir, const SpecialTokenOverrides& overrides) {
    namespace fs = std::filesystem;
    const std::string json_path = dir + "/tokenizer.json";
    if (!fs::exists(json_path)) {
        const bool sentencepiece = fs::exists(dir + "/tokenizer.model");
        fail(ErrorKind::kConfig, dir + ": no tokenizer.json" +
                                     (sentencepiece ? std::string(" (only a SentencePiece tokenizer.model: convert it once "
                                                                  "with transformers, AutoTokenizer.from_pretrained(dir)"
                                                                  ".save_pretrained(dir), which writes tokenizer.json)")
                                                    : std::string(" in the folder")));
    }
    auto json_text = read_text_file(json_path);
    if (!json_text) fail(ErrorKind::kConfig, json_path + ": cannot read the tokenizer file");
    const std::string config_path = dir + "/tokenizer_config.json";
    std::string config_text = read_text_file(config_path).value_or("");
    const json config = json_object(config_text, config_path);
    // The class tokenizer_config.json names may rebuild the file's stages (tokenizer_class.h).
    const std::optional<ClassRebuild> rebuild = rebuild_for_class(*json_text, config, config_path);
    if (rebuild) *json_text = rebuild->json_text;
    HfTokenizer t(Tokenizer::from_json_text(*json_text, json_path));
    t.json_text_ = std::move(*json_text);
    t.config_text_ = std::move(config_text);
    const json special_map = read_json_if_present(dir + "/special_tokens_map.json");
    // A special token: from_pretrained's argument, else the config's, else special_tokens_map.json's,
    // else, when neither file names the key (null included), the class's default.
    auto named = [&](const char* key, const std::optional<std::string>& override_value,
                     const std::optional<std::string>& class_default) {
        if (override_value) return override_value;
        if (auto v = token_entry(config, key, config_path)) return v;
        if (auto v = token_entry(special_map, key, dir + "/special_tokens_map.json")) return v;
        return config.contains(key) || special_map.contains(key) ? std::nullopt : class_default;
    };
    const ClassRebuild defaults = rebuild.value_or(ClassRebuild{});
    t.bos_ = named("bos_token", overrides.bos, defaults.bos);
    t.eos_ = named("eos_token", overrides.eos, defaults.eos);
    t.unk_ = named("unk_token", overrides.unk, defaults.unk);
    t.pad_ = named("pad_token", overrides.pad, defaults.pad);
    const std::optional<std::string> sep = named("sep_token", std::nullopt, std::nullopt),
                                     cls = named("cls_token", std::nullopt, std::nullopt),
                                     mask = named("mask_token", std::nullopt, defaults.mask);

    // transformers adds the named special tokens (in its attribute order: bos, eos, unk, sep, pad,
    // cls, mask), then the additional ones, each as special; tokens already known keep their ids.
    for (const auto& token : {t.bos_, t.eos_, t.unk_, sep, t.pad_, cls, mask})
        if (token) t.tokenizer_.add_tokens({*token}, /*special=*/true);
    if (!overrides.additional.empty()) t.tokenizer_.add_tokens(overrides.additional, /*special=*/true);
    t.additional_ = overrides.additional;

    // transformers 5: a chat_template.jinja file takes priority over tokenizer_config.json's entry.
    if (fs::exists(dir + "/chat_template.jinja")) {
        t.chat_template_ = read_text_file(dir + "/chat_template.jinja").value_or("");
        t.chat_template_origin_ = dir + "/chat_template.jinja";
    } else if (config.contains("chat_template")) {
        const json& tpl = config["chat_template"];
        if (tpl.is_string()) {
            t.chat_template_ = tpl.get<std::string>();
        } else if (tpl.is_array()) {  // [{"name": "default", "template": ...}, ...]
            for (const auto& entry : tpl)
                if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template"))
                    t.chat_template_ = entry["template"].get<std::string>();
        } else if (!tpl.is_null()) {
            fail(ErrorKind::kConfig, config_path + ": chat_template: must be a string or a list of {name, template}");
        }
        t.chat_template_origin_ = config_path + ": chat_template";
    }
    if (config.contains("model_max_length") && config["model_max_length"].is_number()) {
        const double length = config["model_max_length"].get<double>();
        if (length < 0)
            fail(ErrorKind::kConfig, config_path + ": model_max_length: must be a non-negative number (got " +
                                         config["model_max_length"].dump() + ")");
        // transformers writes int(1e30) (its VERY_LARGE_INTEGER) for "no limit": beyond int64 it stays unset.
        if (length < 9.0e18) t.model_max_length_ = static_cast<int64_t>(length);
    }

    // add_bos_token / add_eos_token in the config replace the post-processor with
    // [bos] $A [eos] (transformers' update_post_processor).
    const bool explicit_bos = config.contains("add_bos_token"), explicit_eos = config.contains("add_eos_token");
    if (explicit_bos || explicit_eos) {
        auto flag = [&](const char* key) {
            if (!config.contains(key) || config[key].is_null()) return false;
            if (!config[key].is_boolean()) fail(ErrorKind::kConfig, config_path + ": " + key + ": must be true or false");
            return config[key].get<bool>();
        };
        t.template_before_.emplace();
        t.template_after_.emplace();
        if (flag("add_bos_token") && t.bos_id()) t.template_before_->push_back(*t.bos_id());
        if (flag("add_eos_token") && t.eos_id()) t.template_after_->push_back(*t.eos_id());
    }
    return t;
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
    if (!template_before_) return tokenizer_.encode(text, add_special_tokens);
    Encoding encoding{tokenizer_.encode(text, false)};
    if (add_special_tokens) surround(encoding, *template_before_, *template_after_);
    return encoding.ids;
}

Encoding HfTokenizer::encode_with_offsets(std::string_view text, bool add_special_tokens) const {
    if (!template_before_) return tokenizer_.encode_with_offsets(text, add_special_tokens);
    // transformers' update_post_processor put a TemplateProcessing in place of the file's
    // post-processor, so none of the file's runs (not even a ByteLevel offset trim).
    Encoding encoding = tokenizer_.encode_with_offsets(text, false, /*post_process=*/false);
    if (add_special_tokens) surround(encoding, *template_before_, *template_after_);
    return encoding;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
    return tokenizer_.decode(ids, skip_special_tokens);
}

std::vector<std::pair<std::string, std::string>> HfTokenizer::pretrained_files() const {
    using ordered = nlohmann::ordered_json;
    auto token_json = [](const AddedToken& a) {
        return ordered{{"id", a.id},           {"content", a.content}, {"single_word", a.single_word},
                       {"lstrip", a.lstrip},   {"rstrip", a.rstrip},   {"normalized", a.normalized},
                       {"special", a.special}};
    };
    ordered file = ordered::parse(json_text_);
    file["added_tokens"] = ordered::array();
    for (const auto& a : tokenizer_.added_tokens()) file["added_tokens"].push_back(token_json(a));

    ordered config = config_text_.empty() ? ordered::object() : ordered::parse(config_text_);
    const std::pair<const char*, const std::optional<std::string>*> named[] = {
        {"bos_token", &bos_}, {"eos_token", &eos_}, {"unk_token", &unk_}, {"pad_token", &pad_}};
    for (const auto& [key, value] : named) {
        if (*value) config[key] = **value;
        else if (config.contains(key)) config[key] = nullptr;
    }
    if (!additional_.empty()) {
        config.erase("additional_special_tokens");
        config["extra_special_tokens"] = additional_;
    }
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object())
        for (const auto& a : tokenizer_.added_tokens()) {
            ordered entry = token_json(a);
            entry.erase("id");
            config["added_tokens_decoder"][std::to_string(a.id)] = entry;
        }
    config.erase("chat_template");

    auto text = [](const ordered& j) { return j.dump(2, ' ', false, ordered::error_handler_t::replace) + "\n"; };
    std::vector<std::pair<std::string, std::string>> files{{"tokenizer.json", text(file)},
                                                           {"tokenizer_config.json", text(config)}};
    if (!chat_template_.empty()) files.emplace_back("chat_template.jinja", chat_template_);
    return files;
}

std::optional<int32_t> HfTokenizer::bos_id() const { return bos_ ? tokenizer_.token_to_id(*bos_) : std::nullopt; }
std::optional<int32_t> HfTokenizer::eos_id() const { return eos_ ? tokenizer_.token_to_id(*eos_) : std::nullopt; }
std::optional<int32_t> HfTokenizer::pad_id() const { return pad_ ? tokenizer_.token_to_id(*pad_) : std::nullopt; }

}  // namespace ftl::tokenizer
