// `ftlaunch generate`: completions for a file of prompts, from a model folder (BART, or the
// decoder family) with an optional PEFT LoRA adapter, decoded as transformers'
// generate(do_sample=False) decodes (model/generate.h) with the model's generation_config.json,
// --max_new_tokens and --num_beams overriding it. Prompts go in batches of --batch_size, padded
// as transformers pads for generation (on the left for a decoder-only model, on the right for an
// encoder-decoder one), so outputs equal transformers' for the same batches. Conversations are
// rendered with the model's chat template (jinja/), as apply_chat_template renders them.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "io/atomic_file.h"
#include "io/hub.h"
#include "model/bart.h"
#include "model/config_reader.h"
#include "model/generate.h"
#include "model/load.h"
#include "peft/lora.h"
#include "tokenizer/chat_renderer.h"
#include "tokenizer/hf_tokenizer.h"
#include "train/batches.h"
#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ftl::app {
namespace {

// A prompt: what its output line shows, and the ids generation continues.
struct Prompt {
    nlohmann::json shown;
    std::vector<int32_t> ids;
};

// One prompt per line (encoded with the tokenizer's special tokens, as tokenizer(prompts) does),
// or JSON lines each with a "prompt" (else "text") string, or "messages": a conversation
// rendered with the model's chat template and its generation prompt and encoded without special
// tokens, as apply_chat_template(messages, add_generation_prompt=True, tokenize=True) does.
std::vector<Prompt> read_prompts(const std::string& path, const tokenizer::HfTokenizer& tok,
                                 const tokenizer::ChatRenderer& chat) {
    std::ifstream in(path);
    if (!in) fail(ErrorKind::kUsage, "--prompts: cannot read '" + path + "'");
    std::vector<Prompt> prompts;
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        if (trim(line).empty()) continue;
        if (!ends_with(path, ".jsonl")) {
            prompts.push_back({line, tok.encode(line, true)});
            continue;
        }
        const std::string where = path + ":" + std::to_string(number);
        const auto record = nlohmann::json::parse(line, nullptr, false);
        if (record.is_object() && record.contains("messages") && record["messages"].is_array()) {
            std::string text;
            for (const auto& segment : chat.render(record["messages"], record, tok, true, false, where)) text += segment.text;
            prompts.push_back({record["messages"], tok.encode(text, false)});
            continue;
        }
        const char* field = record.is_object() && record.contains("prompt") ? "prompt" : "text";
        if (!record.is_object() || !record.contains(field) || !record[field].is_string())
            fail(ErrorKind::kConfig, where + ": expected a JSON object with a \"prompt\" (or \"text\") string or "
                                             "\"messages\" (a conversation for the model's chat template)");
        prompts.push_back({record[field], tok.encode(record[field].get<std::string>(), true)});
    }
    if (prompts.empty()) fail(ErrorKind::kConfig, path + ": no prompts");
    return prompts;
}

}  // namespace

int run_generate(const GenerateInvocation& inv, const Log& log) {
    const std::string model_dir = io::resolve_repo_dir(inv.model_name_or_path, io::HubCache::from_environment());
    const auto config_text = read_text_file(model_dir + "/config.json");
    if (!config_text) fail(ErrorKind::kConfig, model_dir + "/config.json: cannot read (is it a model folder?)");
    const bool encoder_decoder =
        model::parse_json_object(*config_text, model_dir + "/config.json").value("model_type", "") == "bart";
    // The adapter's folder holds the tokenizer it was trained with when the run saved one (ftlaunch
    // and SFTTrainer do: added tokens, chat template), as AutoTokenizer.from_pretrained(adapter).
    const bool adapter_tokenizer = !inv.adapter_path.empty() && std::filesystem::exists(inv.adapter_path + "/tokenizer.json");
    const std::string tokenizer_dir = adapter_tokenizer ? inv.adapter_path : model_dir;
    const tokenizer::HfTokenizer tokenizer = tokenizer::HfTokenizer::load(tokenizer_dir);
    const auto chat = tokenizer::ChatRenderer::from_tokenizer(
        tokenizer, tokenizer.chat_template_origin().empty() ? tokenizer_dir + "/tokenizer_config.json"
                                                            : tokenizer.chat_template_origin());
    const std::vector<Prompt> prompts = read_prompts(inv.prompts_file, tokenizer, chat);
    const at::Device device = inv.device == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
    model::LoadOptions load;
    load.dtype = at::kFloat;
    load.device = device;

    // The model, its adapter and its generation settings.
    model::GenerationConfig generation;
    std::optional<model::LoadedSeq2Seq> seq2seq;
    std::optional<model::LoadedModel> decoder;
    if (encoder_decoder) {
        seq2seq.emplace(model::load_bart(model_dir, load));
        if (!inv.adapter_path.empty()) peft::load_adapter(inv.adapter_path, seq2seq->model.linears(), "bart");
        generation = model::read_generation_config(model_dir, seq2seq->model.config());
    } else {
        decoder.emplace(model::load_causal_lm(model_dir, load));
        if (!inv.adapter_path.empty()) peft::load_adapter(inv.adapter_path, decoder->model);
        generation = model::read_generation_config(model_dir, decoder->model.config());
    }
    if (inv.max_new_tokens) generation.max_new_tokens = *inv.max_new_tokens;
    if (inv.num_beams) generation.num_beams = *inv.num_beams;
    const int32_t pad_id = tokenizer.pad_id().value_or(static_cast<int32_t>(generation.pad_token_id));
    log.info("generating for " + std::to_string(prompts.size()) + " prompts with " + model_dir +
             (inv.adapter_path.empty() ? std::string() : " + " + inv.adapter_path) + ": " +
             (generation.num_beams == 1 ? std::string("greedy") : std::to_string(generation.num_beams) + " beams"));

    std::string out_text;
    for (size_t first = 0; first < prompts.size(); first += static_cast<size_t>(inv.batch_size)) {
        const size_t end = std::min(prompts.size(), first + static_cast<size_t>(inv.batch_size));
        std::vector<const std::vector<int32_t>*> row_pointers;
        for (size_t i = first; i < end; ++i) row_pointers.push_back(&prompts[i].ids);
        auto [ids, mask] = train::pad_rows(row_pointers, pad_id, /*left=*/!encoder_decoder);
        const at::Tensor sequences =
            (encoder_decoder ? model::generate(seq2seq->model, ids.to(device), mask.to(device), generation)
                             : model::generate(decoder->model, ids.to(device), mask.to(device), generation))
                .cpu();
        // What was generated: after the prompt (decoder-only) or after the decoder's start token.
        const int64_t skip = encoder_decoder ? 1 : ids.size(1);
        for (size_t i = first; i < end; ++i) {
            const at::Tensor row = sequences[static_cast<int64_t>(i - first)].narrow(0, skip, sequences.size(1) - skip).contiguous();
            std::vector<int32_t> generated(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
            nlohmann::json line = {{"prompt", prompts[i].shown},
                                   {"completion", tokenizer.decode(generated, /*skip_special_tokens=*/true)},
                                   {"ids", generated}};
            out_text += line.dump() + "\n";
        }
    }
    if (inv.output.empty()) std::cout << out_text << std::flush;
    else io::write_file_atomically(inv.output, [&](std::ostream& out) { out << out_text; });
    return 0;
}

}  // namespace ftl::app
