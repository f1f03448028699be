#include "config/train_args.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <type_traits>
#include <sstream>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

namespace {

const char* kSeq2seqScript = "peft_lora_seq2seq_accelerate_ds_zero3_offload.py";

// One flag: its canonical name, aliases, how to set it from text and how to print it.
struct FlagSpec {
    std::string name;
    std::vector<std::string> aliases;
    bool is_bool = false;
    std::vector<std::string> words;  // a boolean flag's other values (taken after the bare flag too)
    std::function<void(TrainArgs&, const std::string& flag, const std::string& value)> set;
    std::function<nlohmann::json(const TrainArgs&)> get;
};

[[noreturn]] void bad_value(const std::string& flag, const std::string& value, const std::string& rule) {
    ftl::fail(ErrorKind::kUsage, "--" + flag + ": " + rule + " (got '" + value + "')");
}

// Value parsers: (flag name, text) -> value, or a usage error naming the rule.
using TextParser = std::function<std::string(const std::string&, const std::string&)>;
using IntParser = std::function<int(const std::string&, const std::string&)>;
using NumberParser = std::function<double(const std::string&, const std::string&)>;
using BoolParser = std::function<bool(const std::string&, const std::string&)>;

TextParser text(std::vector<std::string> choices = {}) {
    return [choices](const std::string& flag, const std::string& value) {
        if (!choices.empty() && std::find(choices.begin(), choices.end(), value) == choices.end())
            bad_value(flag, value, "must be one of " + join(choices, ", "));
        return value;
    };
}

IntParser integer(long long min) {
    return [min](const std::string& flag, const std::string& value) {
        auto v = parse_int(value);
        if (!v) bad_value(flag, value, "must be an integer");
        if (*v < min || *v > (1LL << 31) - 1) bad_value(flag, value, "must be at least " + std::to_string(min));
        return static_cast<int>(*v);
    };
}

// A number in [min, max], or [min, max) when `max_exclusive`.
NumberParser number(double min, double max = 1e15, bool max_exclusive = false) {
    return [=](const std::string& flag, const std::string& value) {
        auto v = parse_double(value);
        if (!v || std::isnan(*v)) bad_value(flag, value, "must be a number");
        if (*v < min || *v > max || (max_exclusive && *v == max)) {
            std::ostringstream range;  // default formatting: "[0, 1)"
            range << "[" << min << ", " << max << (max_exclusive ? ")" : "]");
            bad_value(flag, value, "must be in " + range.str());
        }
        return *v;
    };
}

// A JSON object given as text (TrainingArguments' dict fields); `example` shows one in the error.
using ObjectParser = std::function<nlohmann::json(const std::string&, const std::string&)>;
ObjectParser json_object(std::string example) {
    return [example](const std::string& flag, const std::string& value) {
        nlohmann::json parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
        if (!parsed.is_object()) bad_value(flag, value, "must be a JSON object, e.g. '" + example + "'");
        return parsed;
    };
}

BoolParser boolean() {
    return [](const std::string& flag, const std::string& value) {
        auto v = parse_bool(value);
        if (!v) bad_value(flag, value, "must be a boolean: true/false, yes/no, 1/0");
        return *v;
    };
}

// --include_num_input_tokens_seen: all, non_padding or no, or a boolean (true: all), as
// TrainingArguments maps it.
std::function<std::string(const std::string&, const std::string&)> token_count_mode() {
    return [](const std::string& flag, const std::string& value) -> std::string {
        if (value == "all" || value == "non_padding" || value == "no") return value;
        if (const auto v = parse_bool(value)) return *v ? "all" : "no";
        bad_value(flag, value, "must be all, non_padding, no or a boolean");
    };
}

// --gradient_checkpointing: a boolean as in TrainingArguments, or ftlaunch's "auto" (recompute
// only the layers whose activations do not fit; train/preflight.h).
FlagSpec checkpointing_flag() {
    FlagSpec f;
    f.name = "gradient_checkpointing";
    f.aliases = {"activation_checkpointing"};  // transformers 5's name; gradient_checkpointing is its alias there
    f.is_bool = true;
    f.words = {"auto"};
    f.set = [](TrainArgs& a, const std::string& flag, const std::string& value) {
        const std::optional<bool> v = parse_bool(value);
        a.gradient_checkpointing_auto = to_lower(value) == "auto";
        if (!v && !a.gradient_checkpointing_auto) bad_value(flag, value, "must be a boolean (true/false, yes/no, 1/0) or auto");
        a.gradient_checkpointing = a.gradient_checkpointing_auto || *v;
    };
    f.get = [](const TrainArgs& a) {
        return a.gradient_checkpointing_auto ? nlohmann::json("auto") : nlohmann::json(a.gradient_checkpointing);
    };
    return f;
}

// --activation_checkpointing_kwargs (alias --gradient_checkpointing_kwargs): what
// activation_checkpointing_enable takes (every_n_layers, offload) and torch.utils.checkpoint's
// keywords that a command line can give.
FlagSpec checkpointing_kwargs_flag() {
    FlagSpec f;
    f.name = "activation_checkpointing_kwargs";
    f.aliases = {"gradient_checkpointing_kwargs"};
    f.set = [](TrainArgs& a, const std::string& flag, const std::string& value) {
        const nlohmann::json kwargs = json_object(R"({"use_reentrant": false})")(flag, value);
        auto bad_key = [&](const std::string& key, const std::string& rule) {
            ftl::fail(ErrorKind::kUsage, "--" + flag + ": " + key + " " + rule + " (got " + kwargs[key].dump() + ")");
        };
        for (const auto& [key, v] : kwargs.items()) {
            if (key == "use_reentrant") {
                if (!v.is_boolean()) bad_key(key, "must be true or false");
                a.use_reentrant = v.get<bool>();  // recomputation gives the same numbers either way
            } else if (key == "every_n_layers") {
                if (!v.is_number_integer() || v.get<long long>() < 1 || v.get<long long>() > (1LL << 30))
                    bad_key(key, "must be an integer of at least 1");
                a.checkpoint_every_n_layers = v.get<int>();
            } else if (key == "preserve_rng_state") {
                if (v != true) bad_key(key, "must be true: a recomputed layer draws the same dropout masks");
            } else if (key == "offload") {
                if (v != false) bad_key(key, "true (saved activations in pinned host memory) is not in this build; "
                                             "--gradient_checkpointing auto keeps what fits instead");
            } else if (key == "determinism_check") {
                if (v != "default" && v != "none") bad_key(key, "must be \"default\" or \"none\"");
            } else if (key == "debug") {
                if (!v.is_boolean()) bad_key(key, "must be true or false");
            } else {
                ftl::fail(ErrorKind::kUsage, "--" + flag + ": '" + key + "' is not a keyword ftlaunch takes (use_reentrant, "
                                             "every_n_layers, preserve_rng_state, offload, determinism_check, debug)");
            }
        }
        a.activation_checkpointing_kwargs = kwargs;
    };
    f.get = [](const TrainArgs& a) { return a.activation_checkpointing_kwargs; };
    return f;
}

template <typename T>
nlohmann::json as_json(const T& v) { return nlohmann::json(v); }
template <typename T>
nlohmann::json as_json(const std::optional<T>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

// A flag stored in `member` (a T or an optional<T>) and read by `parse` (returning T).
template <typename Field, typename Value>
FlagSpec flag(std::string name, Field TrainArgs::*member,
              std::function<Value(const std::string&, const std::string&)> parse,
              std::vector<std::string> aliases = {}) {
    FlagSpec f;
    f.name = std::move(name);
    f.aliases = std::move(aliases);
    f.is_bool = std::is_same_v<Value, bool>;
    f.set = [member, parse](TrainArgs& a, const std::string& flag_name, const std::string& value) {
        a.*member = parse(flag_name, value);
    };
    f.get = [member](const TrainArgs& a) { return as_json(a.*member); };
    return f;
}

const std::vector<std::string> kStrategies = {"no", "steps", "epoch"};
const std::vector<std::string> kLogLevels = {"debug", "info", "warning", "error", "critical", "passive"};
const std::vector<std::string> kFloatDtypes = {"float16", "bfloat16", "float32"};

const std::vector<FlagSpec>& flag_table() {
    using A = TrainArgs;
    static const std::vector<FlagSpec> table = {
        // ModelArguments
        flag("model_name_or_path", &A::model_name_or_path, text()),
        flag("model_revision", &A::model_revision, text()),
        flag("torch_dtype", &A::torch_dtype, text({"auto", "bfloat16", "float16", "float32"}), {"dtype"}),
        flag("adapter_path", &A::adapter_path, text()),
        flag("chat_template_format", &A::chat_template_format, text({"chatml", "zephyr", "none"})),
        flag("chat_template_path", &A::chat_template_path, text()),
        flag("lora_alpha", &A::lora_alpha, integer(1)),
        flag("lora_dropout", &A::lora_dropout, number(0.0, 1.0, true)),
        flag("lora_r", &A::lora_r, integer(1)),
        flag("lora_target_modules", &A::lora_target_modules, text()),
        flag("lora_target_parameters", &A::lora_target_parameters, text()),
        flag("use_rslora", &A::use_rslora, boolean()),
        flag("use_dora", &A::use_dora, boolean()),
        flag("use_nested_quant", &A::use_nested_quant, boolean()),
        flag("bnb_4bit_compute_dtype", &A::bnb_4bit_compute_dtype, text(kFloatDtypes)),
        flag("bnb_4bit_quant_storage_dtype", &A::bnb_4bit_quant_storage_dtype,
             text({"uint8", "float16", "bfloat16", "float32"})),
        flag("bnb_4bit_quant_type", &A::bnb_4bit_quant_type, text({"nf4", "fp4"})),
        flag("use_flash_attn", &A::use_flash_attn, boolean()),
        flag("use_peft_lora", &A::use_peft_lora, boolean()),
        flag("use_8bit_quantization", &A::use_8bit_quantization, boolean()),
        flag("use_4bit_quantization", &A::use_4bit_quantization, boolean()),
        flag("use_reentrant", &A::use_reentrant, boolean()),
        flag("use_unsloth", &A::use_unsloth, boolean()),
        // DataTrainingArguments / SFTConfig
        flag("dataset_name", &A::dataset_name, text()),
        flag("append_concat_token", &A::append_concat_token, boolean()),
        flag("add_special_tokens", &A::add_special_tokens, boolean()),
        flag("splits", &A::splits, text()),
        flag("dataset_text_field", &A::dataset_text_field, text()),
        flag("max_seq_length", &A::max_seq_length, integer(1), {"max_length", "max_seq_len"}),
        flag("packing", &A::packing, boolean()),
        flag("packing_strategy", &A::packing_strategy, text({"wrapped", "bfd", "bfd_split"})),
        flag("truncation_mode", &A::truncation_mode, text({"keep_start", "keep_end"})),
        flag("eval_packing", &A::eval_packing, boolean()),
        flag("dataset_num_proc", &A::dataset_num_proc, integer(1)),
        flag("assistant_only_loss", &A::assistant_only_loss, boolean()),
        flag("completion_only_loss", &A::completion_only_loss, boolean()),
        flag("text_column", &A::text_column, text()),
        flag("label_column", &A::label_column, text()),
        flag("max_source_length", &A::max_source_length, integer(1)),
        flag("max_target_length", &A::max_target_length, integer(1)),
        // TrainingArguments
        flag("seed", &A::seed, integer(0)),
        flag("num_train_epochs", &A::num_train_epochs, number(0.0, 1e9)),
        flag("max_steps", &A::max_steps, integer(-1)),
        flag("logging_steps", &A::logging_steps, number(0.0, 1e12)),
        flag("log_level", &A::log_level, text(kLogLevels)),
        flag("log_level_replica", &A::log_level_replica, text(kLogLevels)),
        flag("logging_strategy", &A::logging_strategy, text(kStrategies)),
        flag("logging_dir", &A::logging_dir, text()),
        flag("logging_first_step", &A::logging_first_step, boolean()),
        flag("logging_nan_inf_filter", &A::logging_nan_inf_filter, boolean()),
        flag("train_sampling_strategy", &A::train_sampling_strategy, text({"random", "sequential", "group_by_length"})),
        flag("eval_strategy", &A::eval_strategy, text(kStrategies), {"evaluation_strategy"}),
        flag("eval_steps", &A::eval_steps, number(0.0)),
        flag("eval_on_start", &A::eval_on_start, boolean()),
        flag("disable_tqdm", &A::disable_tqdm, boolean()),
        flag("eval_delay", &A::eval_delay, number(0.0)),
        flag("data_seed", &A::data_seed, integer(0)),
        flag("save_only_model", &A::save_only_model, boolean()),
        flag("include_num_input_tokens_seen", &A::include_num_input_tokens_seen, token_count_mode()),
        flag("save_strategy", &A::save_strategy, text({"no", "steps", "epoch", "best"})),
        flag("load_best_model_at_end", &A::load_best_model_at_end, boolean()),
        flag("metric_for_best_model", &A::metric_for_best_model,
             text({"loss", "eval_loss", "perplexity", "eval_perplexity"})),
        flag("greater_is_better", &A::greater_is_better, boolean()),
        flag("save_steps", &A::save_steps, number(0.0, 1e12)),
        flag("save_total_limit", &A::save_total_limit, integer(1)),
        flag("push_to_hub", &A::push_to_hub, boolean()),
        flag("hub_private_repo", &A::hub_private_repo, boolean()),
        flag("hub_strategy", &A::hub_strategy, text({"end", "every_save", "checkpoint", "all_checkpoints"})),
        flag("hub_model_id", &A::hub_model_id, text()),
        flag("hub_token", &A::hub_token, text()),
        flag("bf16", &A::bf16, boolean()),
        flag("fp16", &A::fp16, boolean()),
        flag("learning_rate", &A::learning_rate, number(0.0, 1e9)),
        flag("lr_scheduler_type", &A::lr_scheduler_type,
             text({"linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                     "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                     "warmup_stable_decay", "reduce_lr_on_plateau"})),
        flag("lr_scheduler_kwargs", &A::lr_scheduler_kwargs, json_object(R"({"num_cycles": 1})")),
        flag("weight_decay", &A::weight_decay, number(0.0, 1e9)),
        flag("warmup_ratio", &A::warmup_ratio, number(0.0, 1.0)),
        flag("warmup_steps", &A::warmup_steps, number(0.0, 1e12)),
        flag("max_grad_norm", &A::max_grad_norm, number(0.0, 1e12)),
        flag("neftune_noise_alpha", &A::neftune_noise_alpha, number(0.0, 1e6)),
        flag("router_aux_loss_coef", &A::router_aux_loss_coef, number(0.0, 1e6)),
        flag("loss_type", &A::loss_type, text({"nll", "dft", "chunked_nll"})),
        flag("output_dir", &A::output_dir, text()),
        flag("overwrite_output_dir", &A::overwrite_output_dir, boolean()),
        flag("per_device_train_batch_size", &A::per_device_train_batch_size, integer(1)),
        flag("per_device_eval_batch_size", &A::per_device_eval_batch_size, integer(1)),
        flag("gradient_accumulation_steps", &A::gradient_accumulation_steps, integer(1)),
        checkpointing_flag(),
        checkpointing_kwargs_flag(),
        flag("embeddings_on_host", &A::embeddings_on_host, boolean()),
        flag("fused_kernels", &A::fused_kernels, boolean()),
        flag("adam_beta1", &A::adam_beta1, number(0.0, 1.0, true)),
        flag("adam_beta2", &A::adam_beta2, number(0.0, 1.0, true)),
        flag("adam_epsilon", &A::adam_epsilon, number(0.0, 1.0)),
        flag("optim", &A::optim, text({"adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw_bnb_8bit", "adamw_8bit",
                                        "paged_adamw_8bit", "paged_adamw_32bit"})),
        flag("resume_from_checkpoint", &A::resume_from_checkpoint, text()),
        flag("report_to", &A::report_to, text()),
        flag("run_name", &A::run_name, text()),
        flag("dataloader_num_workers", &A::dataloader_num_workers, integer(0)),
        flag("dataloader_drop_last", &A::dataloader_drop_last, boolean()),
        flag("dataloader_pin_memory", &A::dataloader_pin_memory, boolean()),
        flag("dataloader_persistent_workers", &A::dataloader_persistent_workers, boolean()),
        flag("dataloader_prefetch_factor", &A::dataloader_prefetch_factor, integer(1)),
        flag("ddp_find_unused_parameters", &A::ddp_find_unused_parameters, boolean()),
        flag("eval_accumulation_steps", &A::eval_accumulation_steps, integer(1)),
        flag("remove_unused_columns", &A::remove_unused_columns, boolean()),
        flag("local_rank", &A::local_rank, integer(-1)),
        flag("torch_compile", &A::torch_compile, boolean()),
        flag("use_liger_kernel", &A::use_liger_kernel, boolean()),
        flag("save_safetensors", &A::save_safetensors, boolean()),
        flag("ddp_timeout", &A::ddp_timeout, integer(1)),
        flag("do_train", &A::do_train, boolean()),
        flag("do_eval", &A::do_eval, boolean()),
        flag("deepspeed", &A::deepspeed, text()),
    };
    return table;
}

const FlagSpec* find_flag(const std::string& name) {
    for (const auto& f : flag_table()) {
        if (f.name == name) return &f;
        for (const auto& alias : f.aliases)
            if (alias == name) return &f;
    }
    return nullptr;
}

// A flag's number as Python prints it (4.0 -> 4, 0.5 -> 0.5), for messages.
std::string json_number(double v) {
    return v == std::floor(v) && std::fabs(v) < 1e15 ? std::to_string(static_cast<long long>(v)) : nlohmann::json(v).dump();
}

// Cross-field rules, checked once all flags are read.
void validate(const TrainArgs& a) {
    if (!a.save_safetensors)
        ftl::fail(ErrorKind::kUsage, "--save_safetensors False: ftlaunch writes safetensors only (the pickled .bin "
                                     "format runs code on load); leave it True");
    if (a.job != JobKind::kSeq2seqExample && a.model_name_or_path.empty())
        ftl::fail(ErrorKind::kUsage,
                  "--model_name_or_path is required: a local model folder or an org/name in the "
                  "Hugging Face hub cache");
    if (a.bf16 && a.fp16 && a.was_given("bf16") && a.was_given("fp16"))
        ftl::fail(ErrorKind::kUsage, "--bf16 True and --fp16 True: choose one mixed precision");
    if (a.load_best_model_at_end && a.save_strategy != "best") {
        if (a.eval_strategy != a.save_strategy)
            ftl::fail(ErrorKind::kUsage, "--load_best_model_at_end requires the save and eval strategy to match, except when "
                                         "--save_strategy=\"best\", but found\n- Evaluation strategy: " + a.eval_strategy +
                                             "\n- Save strategy: " + a.save_strategy);
        const double eval_steps = a.eval_steps.value_or(a.logging_steps);
        if (a.eval_strategy == "steps" && (eval_steps < 1) != (a.save_steps < 1))
            ftl::fail(ErrorKind::kUsage, "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation "
                                         "steps, which cannot get guaranteed when mixing ratio and absolute steps for "
                                         "save_steps " + json_number(a.save_steps) + " and eval_steps " + json_number(eval_steps) + ".");
        if (a.eval_strategy == "steps" && std::llround(a.save_steps * 1e6) % std::max(1LL, std::llround(eval_steps * 1e6)) != 0)
            ftl::fail(ErrorKind::kUsage, "--load_best_model_at_end requires the saving steps to be a round multiple of the "
                                         "evaluation steps, but found " + json_number(a.save_steps) +
                                             ", which is not a round multiple of " + json_number(eval_steps) + ".");
    }
    if (a.eval_on_start && a.eval_strategy == "no")
        ftl::fail(ErrorKind::kUsage, "--eval_on_start True needs an evaluation split to evaluate: set --eval_strategy "
                                     "steps or epoch (and --splits train,test)");
    if (a.lr_scheduler_type == "reduce_lr_on_plateau" && a.eval_strategy == "no")
        ftl::fail(ErrorKind::kUsage, "--lr_scheduler_type reduce_lr_on_plateau lowers the rate when evaluations stop "
                                     "improving: it needs --eval_strategy steps or epoch (TrainingArguments: requires an "
                                     "eval strategy)");
    if (a.save_strategy == "best" && a.eval_strategy == "no")
        ftl::fail(ErrorKind::kUsage, "--save_strategy best saves when an evaluation is a new best: it needs --eval_strategy "
                                     "steps or epoch");
    if (a.gradient_checkpointing_auto && a.checkpoint_every_n_layers > 1)
        ftl::fail(ErrorKind::kUsage, "--gradient_checkpointing auto chooses the recomputed layers from free memory; "
                                     "--activation_checkpointing_kwargs every_n_layers " +
                                         std::to_string(a.checkpoint_every_n_layers) + " chooses them by index: give one");
    if (a.job == JobKind::kSeq2seqExample && a.neftune_noise_alpha)
        ftl::fail(ErrorKind::kUsage, "--neftune_noise_alpha: the seq2seq example trains without NEFTune (a decoder-only "
                                     "SFT option)");
    if (a.job == JobKind::kSeq2seqExample && a.train_sampling_strategy != "random")
        ftl::fail(ErrorKind::kUsage, "--train_sampling_strategy " + a.train_sampling_strategy +
                                         ": the seq2seq example shuffles its rows (DataLoader(shuffle=True)); only random "
                                         "applies");
    if (a.job == JobKind::kSeq2seqExample && a.checkpoint_every_n_layers > 1)
        ftl::fail(ErrorKind::kUsage, "--activation_checkpointing_kwargs every_n_layers: the seq2seq example recomputes "
                                     "the whole encoder and decoder or nothing");
    if (a.use_4bit_quantization && a.use_8bit_quantization)
        ftl::fail(ErrorKind::kUsage,
                  "You configured 4bit and 8bit quantization at the same time (--use_4bit_quantization "
                  "True and --use_8bit_quantization True), please choose only one of them.");
    for (const auto& split : split(a.splits, ',')) {
        const std::string s = trim(split);
        if (s.find("train") == std::string::npos && s.find("test") == std::string::npos)
            ftl::fail(ErrorKind::kUsage, "--splits: Split type '" + s +
                                             "' not recognized as one of test or train (got '" + a.splits + "')");
    }
    if (a.output_dir.empty()) ftl::fail(ErrorKind::kUsage, "--output_dir: must not be empty");
    if (a.use_dora && !a.use_peft_lora)
        ftl::fail(ErrorKind::kUsage, "--use_dora True: DoRA is a LoRA variant; it needs --use_peft_lora True");
    if (!a.chat_template_path.empty()) {
        if (!ends_with(a.chat_template_path, ".jinja") && !ends_with(a.chat_template_path, ".j2"))
            ftl::fail(ErrorKind::kUsage, "--chat_template_path " + a.chat_template_path +
                                             ": ftlaunch reads a template file (.jinja or .j2); TRL's other form, a "
                                             "tokenizer whose template and tokens are cloned, is not supported");
        if (a.chat_template_format != "none")
            ftl::fail(ErrorKind::kUsage, "--chat_template_path and --chat_template_format " + a.chat_template_format +
                                             ": both set the chat template; pass one (--chat_template_format none)");
    }
}

// The integrations transformers' --report_to knows (transformers.integrations), TensorBoard aside.
const char* const kOnlineIntegrations[] = {"azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive",
                                           "flyte",    "mlflow",  "neptune",    "swanlab",  "trackio", "wandb"};

}  // namespace

std::string to_string(JobKind kind) {
    switch (kind) {
        case JobKind::kSft: return "sft";
        case JobKind::kEvaluate: return "evaluate";
        case JobKind::kEstimateMemory: return "estimate-memory";
        case JobKind::kSeq2seqExample: break;
    }
    return "seq2seq_example";
}

std::optional<JobKind> job_for_script(const std::string& token) {
    if (token == "train" || token == "train.py" || ends_with(token, "/train.py")) return JobKind::kSft;
    if (token == "evaluate") return JobKind::kEvaluate;
    if (token == "estimate-memory") return JobKind::kEstimateMemory;
    if (token == kSeq2seqScript || ends_with(token, std::string("/") + kSeq2seqScript))
        return JobKind::kSeq2seqExample;
    return std::nullopt;
}

std::vector<std::string> known_job_tokens() { return {"train", "train.py", "evaluate", "estimate-memory", kSeq2seqScript}; }

TrainArgs default_train_args(JobKind job) {
    TrainArgs a;
    a.job = job;
    if (job == JobKind::kSeq2seqExample) {
        // Values hard-coded in peft's peft_lora_seq2seq_accelerate_ds_zero3_offload.py.
        a.model_name_or_path = "facebook/bart-large";
        a.dataset_name = "ought/raft:twitter_complaints";
        a.use_peft_lora = true;
        a.lora_r = 8;
        a.lora_alpha = 32;
        a.lora_dropout = 0.1;
        a.lora_target_modules = "q_proj,v_proj";
        a.learning_rate = 3e-3;
        a.num_train_epochs = 5;
        a.per_device_train_batch_size = 8;
        a.per_device_eval_batch_size = 8;
        a.seed = 42;
        a.lr_scheduler_type = "linear";
        a.bf16 = false;
        a.gradient_checkpointing = false;
        a.max_grad_norm = 0.0;  // the script never clips; DeepSpeed's gradient_clipping does, when configured
        a.weight_decay = 0.01;  // torch.optim.AdamW's default, which accelerate hands to DeepSpeedCPUAdam
        a.splits = "train";     // the example evaluates on the train split
        a.output_dir = "twitter_complaints_facebook_bart-large_LORA_SEQ_2_SEQ_LM";
    }
    return a;
}

int bitsandbytes_state_bits(const std::string& optim) {
    if (optim.find("8bit") != std::string::npos) return 8;
    return optim == "paged_adamw_32bit" ? 32 : 0;
}

ReportTargets report_targets(const std::string& report_to) {
    ReportTargets targets;
    for (const std::string& item : split(report_to, ',')) {
        const std::string name = trim(item);
        if (name == "none" || name.empty()) continue;
        if (name == "all" || name == "tensorboard") {
            targets.tensorboard = true;
            continue;
        }
        const bool known = std::find(std::begin(kOnlineIntegrations), std::end(kOnlineIntegrations), name) !=
                           std::end(kOnlineIntegrations);
        if (!known) {
            std::vector<std::string> names(std::begin(kOnlineIntegrations), std::end(kOnlineIntegrations));
            names.insert(names.begin(), {"none", "all", "tensorboard"});
            ftl::fail(ErrorKind::kUsage, "--report_to: '" + name + "' is not an integration transformers knows (one or more of " +
                                             join(names, ", ") + ", separated by commas)");
        }
        targets.online.push_back(name);
    }
    return targets;
}

ParsedTrainArgs parse_train_args(JobKind job, const std::vector<std::string>& argv) {
    ParsedTrainArgs out;
    out.args = default_train_args(job);
    TrainArgs& a = out.args;
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string& token = argv[i];
        if (!starts_with(token, "--") || token.size() == 2)
            ftl::fail(ErrorKind::kUsage, "unexpected argument '" + token +
                                             "': training flags look like --name value");
        std::string name = token.substr(2);
        std::optional<std::string> value;
        if (auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        }
        const std::string as_typed = name;
        std::replace(name.begin(), name.end(), '-', '_');
        const FlagSpec* spec = find_flag(name);
        if (!spec)
            ftl::fail(ErrorKind::kUsage,
                      "unknown argument --" + as_typed + " for the " + to_string(job) + " job" +
                          did_you_mean("--" + name, [] {
                              std::vector<std::string> names;
                              for (const auto& n : known_train_flags()) names.push_back("--" + n);
                              return names;
                          }()));
        if (!value) {
            const bool next_is_value = i + 1 < argv.size() && !starts_with(argv[i + 1], "--");
            if (spec->is_bool) {
                // A bare boolean means True, as in HfArgumentParser (nargs='?', const=True).
                const auto is_word = [&](const std::string& word) { return to_lower(argv[i + 1]) == word; };
                if (next_is_value && (parse_bool(argv[i + 1]) || std::any_of(spec->words.begin(), spec->words.end(), is_word)))
                    value = argv[++i];
                else value = "true";
            } else {
                if (i + 1 >= argv.size())
                    ftl::fail(ErrorKind::kUsage, "--" + name + ": expects a value");
                value = argv[++i];
            }
        }
        spec->set(a, name, *value);
        a.given.insert(spec->name);
    }
    if (a.was_given("fp16") && a.fp16 && !a.was_given("bf16")) a.bf16 = false;  // SFTConfig rule
    // TrainingArguments.__post_init__: the best-model metric and its direction.
    if ((a.load_best_model_at_end || a.save_strategy == "best" || a.lr_scheduler_type == "reduce_lr_on_plateau") &&
        a.metric_for_best_model.empty())
        a.metric_for_best_model = "loss";
    if (!a.greater_is_better && !a.metric_for_best_model.empty())
        a.greater_is_better = !ends_with(a.metric_for_best_model, "loss");
    if (a.push_to_hub || a.was_given("hub_private_repo") || a.was_given("hub_strategy") ||
        a.was_given("hub_model_id") || a.was_given("hub_token"))
        out.warnings.push_back(
            "--push_to_hub and --hub_* are accepted but nothing is uploaded: ftlaunch has no "
            "network access to the Hub; the results stay in --output_dir " + a.output_dir);
    if (a.loss_type == "chunked_nll") {  // SFTConfig.__post_init__
        out.warnings.push_back("--loss_type chunked_nll is deprecated in TRL and means nll (ftlaunch's cross-entropy is "
                               "always chunked)");
        a.loss_type = "nll";
    }
    if (a.torch_compile)
        out.warnings.push_back("--torch_compile True changes nothing: ftlaunch's model is C++ and CUDA kernels, with no "
                               "Python graph for torch.compile to compile");
    if (a.use_liger_kernel)
        out.warnings.push_back("--use_liger_kernel True changes nothing: ftlaunch's own fused RMSNorm/RoPE/SwiGLU kernels "
                               "(--fused_kernels) and chunked cross-entropy do what Liger's kernels do in the HF stack");
    validate(a);
    const ReportTargets targets = report_targets(a.report_to);  // throws for an unknown integration
    if (!targets.online.empty())
        out.warnings.push_back("--report_to " + join(targets.online, ",") +
                               ": these services are online and ftlaunch sends nothing over the network; training goes on, "
                               "and the metrics are in " + a.output_dir + "/metrics.jsonl (and TensorBoard files with "
                               "--report_to tensorboard)");
    return out;
}

std::vector<std::string> TrainArgs::lora_target_parameters_list() const {
    std::vector<std::string> out;
    for (const std::string& entry : split(lora_target_parameters, ','))
        if (!trim(entry).empty()) out.push_back(trim(entry));
    return out;
}

std::vector<std::string> known_train_flags() {
    std::vector<std::string> names;
    for (const auto& f : flag_table()) {
        names.push_back(f.name);
        for (const auto& alias : f.aliases) names.push_back(alias);
    }
    return names;
}

nlohmann::json TrainArgs::to_json() const {
    nlohmann::json j;
    j["job"] = to_string(job);
    for (const auto& f : flag_table()) j[f.name] = f.get(*this);
    return j;
}

}  // namespace ftl::config
