#include "train/inputs.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "data/best_fit_packing.h"
#include "data/dataset.h"
#include "data/row_cache.h"
#include "io/hub.h"
#include "model/router_balance.h"
#include "model/tensor_io.h"
#include "train/autocast.h"
#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ftl::train {

std::string resolve_dataset_dir(const std::string& dataset_name) {
    const io::HubCache hub = io::HubCache::from_environment();
    const size_t colon = dataset_name.rfind(':');
    if (colon == std::string::npos || std::filesystem::exists(dataset_name))
        return io::resolve_repo_dir(dataset_name, hub, io::RepoType::kDataset);
    const std::string repo = io::resolve_repo_dir(dataset_name.substr(0, colon), hub, io::RepoType::kDataset);
    const std::string subset = dataset_name.substr(colon + 1);
    for (const std::string& candidate : {repo + "/" + subset, repo + "/data/" + subset})
        if (std::filesystem::is_directory(candidate)) return candidate;
    fail(ErrorKind::kConfig, "--dataset_name " + dataset_name + ": " + repo + " has no folder for the subset '" + subset +
                                 "' (looked for " + subset + "/ and data/" + subset + "/)");
}

at::Generator dropout_generator(const at::Device& device, uint64_t seed) {
    at::Generator generator = device.is_cpu() ? at::make_generator<at::CPUGeneratorImpl>(seed)
                                              : at::globalContext().defaultGenerator(device).clone();
    generator.set_current_seed(seed);
    return generator;
}

JobInputs resolve_job_inputs(const config::TrainArgs& args) {
    const io::HubCache hub = io::HubCache::from_environment();
    const std::string model_dir =
        io::resolve_repo_dir(args.model_name_or_path, hub, io::RepoType::kModel, args.model_revision);
    const std::string dataset_dir = resolve_dataset_dir(args.dataset_name);
    std::optional<tokenizer::ChatFormat> chat_format;
    if (args.chat_template_format != "none")
        chat_format = tokenizer::parse_chat_format(args.chat_template_format, "--chat_template_format");
    auto tok = tokenizer::HfTokenizer::load(
        model_dir, chat_format ? tokenizer::chat_special_tokens(*chat_format) : tokenizer::SpecialTokenOverrides{});
    if (chat_format)  // train.py: tokenizer.chat_template = the format's template
        tok.set_chat_template(tokenizer::chat_template_text(*chat_format), "--chat_template_format " + args.chat_template_format);
    else
        tok.set_pad_to_eos();
    if (!args.chat_template_path.empty()) {  // SFTConfig.chat_template_path, a template file
        const auto text = read_text_file(args.chat_template_path);
        if (!text) fail(ErrorKind::kConfig, "--chat_template_path " + args.chat_template_path + ": cannot read the file");
        tok.set_chat_template(*text, args.chat_template_path);
    }
    auto chat = chat_format ? std::make_shared<const tokenizer::ChatRenderer>(*chat_format)
                            : std::make_shared<const tokenizer::ChatRenderer>(tokenizer::ChatRenderer::from_tokenizer(
                                  tok, tok.chat_template_origin().empty() ? model_dir + "/tokenizer_config.json"
                                                                          : tok.chat_template_origin()));
    return {model_dir, dataset_dir, chat_format, std::move(tok), std::move(chat)};
}

bool resizes_vocabulary(const JobInputs& inputs, const model::DecoderConfig& config) {
    return inputs.chat_format && inputs.tokenizer.size() > config.vocab_size;
}

bool embeddings_stay_on_host(const config::TrainArgs& args, const at::Device& device, bool partitioned,
                             const model::CausalLM& model, bool resized) {
    const model::DecoderWeights& w = model.weights();
    return args.embeddings_on_host && args.use_peft_lora && device.is_cuda() && !partitioned && !resized &&
           !w.lm_head.is_same(w.embed_tokens);
}

zero::SliceTypes model_types(const config::RunConfig& run, const JobInputs& inputs, const model::DecoderConfig& config) {
    zero::SliceTypes types(at::kFloat);
    if (!run.train.use_peft_lora) return types;
    const bool resizes = resizes_vocabulary(inputs, config);
    if (!resizes) {
        const std::string name = config::frozen_base_dtype(run, config.torch_dtype);
        types.base = model::parse_float_dtype(name, run.train.torch_dtype == "auto"
                                                        ? "--torch_dtype auto: " + inputs.model_dir + "/config.json: dtype"
                                                        : "--torch_dtype");
    }
    const std::optional<at::ScalarType> autocast = autocast_dtype(run.train);
    types.linears = autocast.value_or(types.base);
    if (!resizes) types.head = autocast.value_or(types.base);
    return types;
}

JobModel load_job_model(const JobInputs& inputs, const at::Device& device, bool mapped, const zero::SliceTypes& types,
                        bool stack_experts_late) {
    model::LoadOptions load;
    load.stack_experts_late = stack_experts_late;
    load.dtype = types.base;
    load.device = device;
    load.keep_mapped = mapped;
    load.linear_dtype = types.linears;
    load.head_dtype = types.head;
    const bool resizes = resizes_vocabulary(inputs, model::read_decoder_config(inputs.model_dir));
    JobModel out{model::load_causal_lm(inputs.model_dir, load), std::nullopt};
    if (resizes) {
        model::DecoderWeights& w = out.loaded.model.weights();
        if (mapped) {  // mean-resize in fp32 as the unmapped path does
            const bool tied = w.lm_head.is_same(w.embed_tokens);
            w.embed_tokens = w.embed_tokens.to(device, at::kFloat);
            w.lm_head = tied ? w.embed_tokens : w.lm_head.to(device, at::kFloat);
        }
        out.resized_to = out.loaded.model.resize_token_embeddings(inputs.tokenizer.size(), 8);
    }
    return out;
}

peft::LoraConfig lora_config(const config::TrainArgs& args) {
    peft::LoraConfig lora;
    lora.r = args.lora_r;
    lora.alpha = args.lora_alpha;
    lora.dropout = args.lora_dropout;
    lora.target_modules = args.lora_target_modules;
    lora.target_parameters = args.lora_target_parameters_list();
    lora.use_rslora = args.use_rslora;
    lora.use_dora = args.use_dora;
    lora.base_model_name_or_path = args.model_name_or_path;
    return lora;
}

model::TokenLoss token_loss_for(const config::TrainArgs& args) {
    return args.loss_type == "dft" ? model::TokenLoss::kDft : model::TokenLoss::kNll;
}

std::shared_ptr<model::RouterBalance> router_balance_for(const config::TrainArgs& args,
                                                         const model::DecoderConfig& config) {
    if (!config.moe) {
        if (args.router_aux_loss_coef.value_or(0.0) != 0.0)
            fail(ErrorKind::kConfig, "--router_aux_loss_coef: " + config.model_type + " is not a mixture-of-experts "
                                     "model, so there is no load-balancing loss to weight (leave the flag out)");
        return nullptr;
    }
    const double coefficient = args.router_aux_loss_coef.value_or(config.moe->router_aux_loss_coef);
    if (coefficient == 0.0) return nullptr;
    return std::make_shared<model::RouterBalance>(config.moe->num_experts, config.moe->experts_per_token, coefficient);
}

std::optional<quant::FourBitConfig> four_bit_config(const config::TrainArgs& args) {
    if (!args.use_4bit_quantization) return std::nullopt;
    quant::FourBitConfig config;
    config.type = quant::parse_quant_type(args.bnb_4bit_quant_type, "--bnb_4bit_quant_type");
    config.nested = args.use_nested_quant;
    config.compute_dtype = model::parse_float_dtype(args.bnb_4bit_compute_dtype, "--bnb_4bit_compute_dtype");
    config.storage_dtype = quant::parse_storage_dtype(args.bnb_4bit_quant_storage_dtype, "--bnb_4bit_quant_storage_dtype");
    return config;
}

bool packs_rows(const config::TrainArgs& args, bool evaluation) {
    return evaluation ? args.eval_packing.value_or(args.packing) : args.packing;
}

std::vector<data::Row> split_rows(const config::TrainArgs& args, const JobInputs& inputs, const std::string& split,
                                  bool packed) {
    data::TextOptions text{args.dataset_text_field, inputs.chat, args.add_special_tokens,
                           args.append_concat_token, args.assistant_only_loss, args.completion_only_loss};
    const std::string source = args.dataset_name + " [" + split + "]";
    const auto records = data::read_split(inputs.dataset_dir, split);
    auto examples = data::tokenize_records(records, inputs.tokenizer, text, source);
    if (!packed)
        return data::unpacked_rows(examples, args.max_seq_length,
                                   args.truncation_mode == "keep_end" ? data::Truncation::kKeepEnd : data::Truncation::kKeepStart,
                                   source);
    if (args.packing_strategy == "wrapped") return data::pack_examples(examples, args.max_seq_length);
    return data::pack_best_fit(examples, args.max_seq_length,
                               args.packing_strategy == "bfd_split" ? data::Overflow::kSplit : data::Overflow::kTruncate,
                               static_cast<int64_t>(records.size()), args.dataset_num_proc.value_or(1));
}

void check_token_ids(const std::vector<data::Row>& rows, int64_t vocab_rows, const std::string& source) {
    for (size_t r = 0; r < rows.size(); ++r)
        for (const int32_t id : rows[r].input_ids)
            if (id >= vocab_rows)
                fail(ErrorKind::kConfig, source + " row " + std::to_string(r) + ": token id " + std::to_string(id) +
                                             " is beyond the model's vocabulary of " + std::to_string(vocab_rows) +
                                             " (was the dataset tokenized for another model?)");
}

namespace {

// Everything tokenisation reads or does (see data/row_cache.h).
std::string tokenization_key(const config::TrainArgs& args, const JobInputs& inputs, const std::string& split,
                             bool packed) {
    data::Fingerprint key;
    key.add("split").add(split);
    const auto splits = data::find_split_files(inputs.dataset_dir);
    if (const auto it = splits.find(split); it != splits.end())
        for (const auto& file : it->second.files) key.add_file_identity(file);
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                             "chat_template.jinja"})
        key.add_file_bytes(inputs.model_dir + "/" + name);
    key.add(args.dataset_text_field).add(args.chat_template_format);
    if (!args.chat_template_path.empty()) key.add_file_bytes(args.chat_template_path);
    key.add(std::to_string(args.add_special_tokens)).add(std::to_string(args.append_concat_token));
    key.add(std::to_string(packed)).add(std::to_string(args.max_seq_length));
    key.add(packed ? args.packing_strategy : args.truncation_mode).add(std::to_string(args.dataset_num_proc.value_or(1)));
    key.add(std::to_string(args.assistant_only_loss)).add(std::to_string(args.completion_only_loss));
    return key.hex();
}

}  // namespace

std::vector<data::Row> prepared_split_rows(const config::TrainArgs& args, const JobInputs& inputs,
                                           const std::string& split, bool packed, const RankContext& rank,
                                           const Log& log) {
    const std::string key = tokenization_key(args, inputs, split, packed);
    const std::string path = args.output_dir + "/tokenized/" + split + "-" + key + ".safetensors";
    const std::string signal = "ftl/tokenized/" + split + "/" + key;
    if (rank.rank != 0 && rank.comm) {
        const std::string status = rank.comm->wait_for(signal, [&](int64_t seconds) {
            log.info("waiting for rank 0 to tokenise split '" + split + "' (" + std::to_string(seconds) + " s)");
        });
        if (status != "ok") fail(ErrorKind::kConfig, "rank 0 could not prepare split '" + split + "': " + status);
        if (auto rows = data::read_row_cache(path, key)) return std::move(*rows);
        log.info(path + " is not visible on this node (output_dir is not shared): tokenising here");
        return split_rows(args, inputs, split, packed);
    }
    std::vector<data::Row> rows;
    try {
        std::optional<std::vector<data::Row>> cached;
        try {
            cached = data::read_row_cache(path, key);
        } catch (const Error& e) {
            log.warn(std::string(e.what()) + ": tokenising again");
        }
        if (cached) {
            log.info("reusing the tokenised rows of split '" + split + "' in " + path);
            rows = std::move(*cached);
        } else {
            rows = split_rows(args, inputs, split, packed);
            data::write_row_cache(path, rows, key);
        }
    } catch (const std::exception& e) {
        if (rank.comm) {
            rank.comm->publish(signal, e.what());
            rank.comm->wait_until_read(signal, std::chrono::seconds(30));
        }
        throw;
    }
    if (rank.comm) rank.comm->publish(signal, "ok");
    return rows;
}

Splits prepare_splits(const config::TrainArgs& args, const JobInputs& inputs, bool need_eval, int64_t vocab_rows,
                      const RankContext& rank, const Log& log) {
    const std::vector<std::string> names = split(args.splits, ',');
    Splits s;
    s.train = prepared_split_rows(args, inputs, trim(names.at(0)), packs_rows(args, false), rank, log);
    check_token_ids(s.train, vocab_rows, args.dataset_name + " [" + trim(names.at(0)) + "]");
    if (need_eval) {
        if (names.size() < 2)
            fail(ErrorKind::kConfig, "--eval_strategy " + args.eval_strategy + ": --splits '" + args.splits +
                                         "' names no evaluation split (e.g. --splits train,test)");
        s.eval = prepared_split_rows(args, inputs, trim(names.at(1)), packs_rows(args, true), rank, log);
        check_token_ids(s.eval, vocab_rows, args.dataset_name + " [" + trim(names.at(1)) + "]");
    }
    return s;
}

}  // namespace ftl::train
