#include "config/train_args.h"

#include <cmath>
#include <functional>
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
    std::function<void(TrainArgs&, const std::string& flag, const std::string& value)> set;
    std::function<nlohmann::json(const TrainArgs&)> get;
};

[[noreturn]] void bad_value(const std::string& flag, const std::string& value, const std::string& rule) {
    ftl::fail(ErrorKind::kUsage, "--" + flag + ": " + rule + " (got '" + value + "')");
}

FlagSpec string_flag(std::string name, std::string TrainArgs::*member,
                     std::vector<std::string> choices = {}, std::vector<std::string> aliases = {}) {
    FlagSpec f;
    f.name = std::move(name);
    f.aliases = std::move(aliases);
    f.set = [member, choices](TrainArgs& a, const std::string& flag, const std::string& value) {
        if (!choices.empty() && std::find(choices.begin(), choices.end(), value) == choices.end())
            bad_value(flag, value, "must be one of " + join(choices, ", "));
        a.*member = value;
    };
    f.get = [member](const TrainArgs& a) { return nlohmann::json(a.*member); };
    return f;
}

FlagSpec int_flag(std::string name, int TrainArgs::*member, long long min,
                  std::vector<std::string> aliases = {}) {
    FlagSpec f;
    f.name = std::move(name);
    f.aliases = std::move(aliases);
    f.set = [member, min](TrainArgs& a, const std::string& flag, const std::string& value) {
        auto v = parse_int(value);
        if (!v) bad_value(flag, value, "must be an integer");
        if (*v < min || *v > (1LL << 31) - 1) bad_value(flag, value, "must be at least " + std::to_string(min));
        a.*member = static_cast<int>(*v);
    };
    f.get = [member](const TrainArgs& a) { return nlohmann::json(a.*member); };
    return f;
}

FlagSpec optional_int_flag(std::string name, std::optional<int> TrainArgs::*member, long long min) {
    FlagSpec f;
    f.name = std::move(name);
    f.set = [member, min](TrainArgs& a, const std::string& flag, const std::string& value) {
        auto v = parse_int(value);
        if (!v) bad_value(flag, value, "must be an integer");
        if (*v < min) bad_value(flag, value, "must be at least " + std::to_string(min));
        a.*member = static_cast<int>(*v);
    };
    f.get = [member](const TrainArgs& a) {
        return a.*member ? nlohmann::json(*(a.*member)) : nlohmann::json(nullptr);
    };
    return f;
}

// A number in [min, max) (max exclusive when `max_exclusive`, else inclusive).
FlagSpec double_flag(std::string name, double TrainArgs::*member, double min, double max,
                     bool max_exclusive = false) {
    FlagSpec f;
    f.name = std::move(name);
    f.set = [member, min, max, max_exclusive](TrainArgs& a, const std::string& flag, const std::string& value) {
        auto v = parse_double(value);
        if (!v || std::isnan(*v)) bad_value(flag, value, "must be a number");
        if (*v < min || *v > max || (max_exclusive && *v == max)) {
            std::ostringstream range;  // default formatting: "[0, 1)"
            range << "[" << min << ", " << max << (max_exclusive ? ")" : "]");
            bad_value(flag, value, "must be in " + range.str());
        }
        a.*member = *v;
    };
    f.get = [member](const TrainArgs& a) { return nlohmann::json(a.*member); };
    return f;
}

FlagSpec optional_double_flag(std::string name, std::optional<double> TrainArgs::*member, double min) {
    FlagSpec f;
    f.name = std::move(name);
    f.set = [member, min](TrainArgs& a, const std::string& flag, const std::string& value) {
        auto v = parse_double(value);
        if (!v || *v < min) bad_value(flag, value, "must be a number >= " + nlohmann::json(min).dump());
        a.*member = *v;
    };
    f.get = [member](const TrainArgs& a) {
        return a.*member ? nlohmann::json(*(a.*member)) : nlohmann::json(nullptr);
    };
    return f;
}

FlagSpec bool_flag(std::string name, bool TrainArgs::*member) {
    FlagSpec f;
    f.name = std::move(name);
    f.is_bool = true;
    f.set = [member](TrainArgs& a, const std::string& flag, const std::string& value) {
        auto v = parse_bool(value);
        if (!v) bad_value(flag, value, "must be a boolean: true/false, yes/no, 1/0");
        a.*member = *v;
    };
    f.get = [member](const TrainArgs& a) { return nlohmann::json(a.*member); };
    return f;
}

FlagSpec optional_bool_flag(std::string name, std::optional<bool> TrainArgs::*member) {
    FlagSpec f;
    f.name = std::move(name);
    f.is_bool = true;
    f.set = [member](TrainArgs& a, const std::string& flag, const std::string& value) {
        auto v = parse_bool(value);
        if (!v) bad_value(flag, value, "must be a boolean: true/false, yes/no, 1/0");
        a.*member = *v;
    };
    f.get = [member](const TrainArgs& a) {
        return a.*member ? nlohmann::json(*(a.*member)) : nlohmann::json(nullptr);
    };
    return f;
}

const std::vector<std::string> kStrategies = {"no", "steps", "epoch"};
const std::vector<std::string> kLogLevels = {"debug", "info", "warning", "error", "critical", "passive"};
const std::vector<std::string> kFloatDtypes = {"float16", "bfloat16", "float32"};

const std::vector<FlagSpec>& flag_table() {
    using A = TrainArgs;
    static const std::vector<FlagSpec> table = {
        // ModelArguments
        string_flag("model_name_or_path", &A::model_name_or_path),
        string_flag("model_revision", &A::model_revision),
        string_flag("chat_template_format", &A::chat_template_format, {"chatml", "zephyr", "none"}),
        int_flag("lora_alpha", &A::lora_alpha, 1),
        double_flag("lora_dropout", &A::lora_dropout, 0.0, 1.0, true),
        int_flag("lora_r", &A::lora_r, 1),
        string_flag("lora_target_modules", &A::lora_target_modules),
        bool_flag("use_rslora", &A::use_rslora),
        bool_flag("use_nested_quant", &A::use_nested_quant),
        string_flag("bnb_4bit_compute_dtype", &A::bnb_4bit_compute_dtype, kFloatDtypes),
        string_flag("bnb_4bit_quant_storage_dtype", &A::bnb_4bit_quant_storage_dtype,
                    {"uint8", "float16", "bfloat16", "float32"}),
        string_flag("bnb_4bit_quant_type", &A::bnb_4bit_quant_type, {"nf4", "fp4"}),
        bool_flag("use_flash_attn", &A::use_flash_attn),
        bool_flag("use_peft_lora", &A::use_peft_lora),
        bool_flag("use_8bit_quantization", &A::use_8bit_quantization),
        bool_flag("use_4bit_quantization", &A::use_4bit_quantization),
        bool_flag("use_reentrant", &A::use_reentrant),
        bool_flag("use_unsloth", &A::use_unsloth),
        // DataTrainingArguments / SFTConfig
        string_flag("dataset_name", &A::dataset_name),
        bool_flag("append_concat_token", &A::append_concat_token),
        bool_flag("add_special_tokens", &A::add_special_tokens),
        string_flag("splits", &A::splits),
        string_flag("dataset_text_field", &A::dataset_text_field),
        int_flag("max_seq_length", &A::max_seq_length, 1, {"max_length", "max_seq_len"}),
        bool_flag("packing", &A::packing),
        bool_flag("assistant_only_loss", &A::assistant_only_loss),
        // TrainingArguments
        int_flag("seed", &A::seed, 0),
        double_flag("num_train_epochs", &A::num_train_epochs, 0.0, 1e9),
        int_flag("max_steps", &A::max_steps, -1),
        double_flag("logging_steps", &A::logging_steps, 0.0, 1e12),
        string_flag("log_level", &A::log_level, kLogLevels),
        string_flag("log_level_replica", &A::log_level_replica, kLogLevels),
        string_flag("logging_strategy", &A::logging_strategy, kStrategies),
        string_flag("logging_dir", &A::logging_dir),
        bool_flag("logging_first_step", &A::logging_first_step),
        string_flag("eval_strategy", &A::eval_strategy, kStrategies, {"evaluation_strategy"}),
        optional_double_flag("eval_steps", &A::eval_steps, 0.0),
        string_flag("save_strategy", &A::save_strategy, {"no", "steps", "epoch", "best"}),
        double_flag("save_steps", &A::save_steps, 0.0, 1e12),
        optional_int_flag("save_total_limit", &A::save_total_limit, 1),
        bool_flag("push_to_hub", &A::push_to_hub),
        optional_bool_flag("hub_private_repo", &A::hub_private_repo),
        string_flag("hub_strategy", &A::hub_strategy, {"end", "every_save", "checkpoint", "all_checkpoints"}),
        string_flag("hub_model_id", &A::hub_model_id),
        string_flag("hub_token", &A::hub_token),
        bool_flag("bf16", &A::bf16),
        bool_flag("fp16", &A::fp16),
        double_flag("learning_rate", &A::learning_rate, 0.0, 1e9),
        string_flag("lr_scheduler_type", &A::lr_scheduler_type,
                    {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                     "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay"}),
        double_flag("weight_decay", &A::weight_decay, 0.0, 1e9),
        double_flag("warmup_ratio", &A::warmup_ratio, 0.0, 1.0),
        double_flag("warmup_steps", &A::warmup_steps, 0.0, 1e12),
        double_flag("max_grad_norm", &A::max_grad_norm, 0.0, 1e12),
        string_flag("output_dir", &A::output_dir),
        bool_flag("overwrite_output_dir", &A::overwrite_output_dir),
        int_flag("per_device_train_batch_size", &A::per_device_train_batch_size, 1),
        int_flag("per_device_eval_batch_size", &A::per_device_eval_batch_size, 1),
        int_flag("gradient_accumulation_steps", &A::gradient_accumulation_steps, 1),
        bool_flag("gradient_checkpointing", &A::gradient_checkpointing),
        double_flag("adam_beta1", &A::adam_beta1, 0.0, 1.0, true),
        double_flag("adam_beta2", &A::adam_beta2, 0.0, 1.0, true),
        double_flag("adam_epsilon", &A::adam_epsilon, 0.0, 1.0),
        string_flag("optim", &A::optim, {"adamw_torch", "adamw_torch_fused", "adamw_hf"}),
        string_flag("resume_from_checkpoint", &A::resume_from_checkpoint),
        string_flag("report_to", &A::report_to),
        string_flag("run_name", &A::run_name),
        int_flag("dataloader_num_workers", &A::dataloader_num_workers, 0),
        bool_flag("dataloader_drop_last", &A::dataloader_drop_last),
        int_flag("ddp_timeout", &A::ddp_timeout, 1),
        bool_flag("do_train", &A::do_train),
        bool_flag("do_eval", &A::do_eval),
        string_flag("deepspeed", &A::deepspeed),
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

// Cross-field rules, checked once all flags are read.
void validate(const TrainArgs& a) {
    if (a.job == JobKind::kSft && a.model_name_or_path.empty())
        ftl::fail(ErrorKind::kUsage,
                  "--model_name_or_path is required: a local model folder or an org/name in the "
                  "Hugging Face hub cache");
    if (a.bf16 && a.fp16 && a.was_given("bf16") && a.was_given("fp16"))
        ftl::fail(ErrorKind::kUsage, "--bf16 True and --fp16 True: choose one mixed precision");
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
}

}  // namespace

std::string to_string(JobKind kind) {
    return kind == JobKind::kSft ? "sft" : "seq2seq_example";
}

std::optional<JobKind> job_for_script(const std::string& token) {
    if (token == "train" || token == "train.py" || ends_with(token, "/train.py")) return JobKind::kSft;
    if (token == kSeq2seqScript || ends_with(token, std::string("/") + kSeq2seqScript))
        return JobKind::kSeq2seqExample;
    return std::nullopt;
}

std::vector<std::string> known_job_tokens() { return {"train", "train.py", kSeq2seqScript}; }

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
        a.max_grad_norm = 1.0;
        a.output_dir = "twitter_complaints_facebook_bart-large_LORA_SEQ_2_SEQ_LM";
    }
    return a;
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
        const FlagSpec* flag = find_flag(name);
        if (!flag)
            ftl::fail(ErrorKind::kUsage,
                      "unknown argument --" + as_typed + " for the " + to_string(job) + " job" +
                          did_you_mean("--" + name, [] {
                              std::vector<std::string> names;
                              for (const auto& n : known_train_flags()) names.push_back("--" + n);
                              return names;
                          }()));
        if (!value) {
            const bool next_is_value = i + 1 < argv.size() && !starts_with(argv[i + 1], "--");
            if (flag->is_bool) {
                // A bare boolean means True, as in HfArgumentParser (nargs='?', const=True).
                if (next_is_value && parse_bool(argv[i + 1])) value = argv[++i];
                else value = "true";
            } else {
                if (i + 1 >= argv.size())
                    ftl::fail(ErrorKind::kUsage, "--" + name + ": expects a value");
                value = argv[++i];
            }
        }
        flag->set(a, name, *value);
        a.given.insert(flag->name);
    }
    if (a.was_given("fp16") && a.fp16 && !a.was_given("bf16")) a.bf16 = false;  // SFTConfig rule
    if (a.push_to_hub || a.was_given("hub_private_repo") || a.was_given("hub_strategy") ||
        a.was_given("hub_model_id") || a.was_given("hub_token"))
        out.warnings.push_back(
            "--push_to_hub and --hub_* are accepted but nothing is uploaded: ftlaunch has no "
            "network access to the Hub; the results stay in --output_dir " + a.output_dir);
    validate(a);
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
