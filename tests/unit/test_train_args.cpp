#include "catch.h"
#include "config/train_args.h"

using namespace ftl::config;
using ftl::ErrorKind;

namespace {
// The job flags of the seed's second command (QLoRA + ZeRO-3), verbatim.
std::vector<std::string> seed_qlora_flags() {
    return {"--seed", "100", "--model_name_or_path", "meta-llama/Llama-2-70b-hf", "--dataset_name",
            "smangrul/ultrachat-10k-chatml", "--chat_template_format", "chatml", "--add_special_tokens", "False",
            "--append_concat_token", "False", "--splits", "train,test", "--max_seq_len", "2048",
            "--num_train_epochs", "1", "--logging_steps", "5", "--log_level", "info", "--logging_strategy", "steps",
            "--eval_strategy", "epoch", "--save_strategy", "epoch", "--push_to_hub", "--hub_private_repo", "True",
            "--hub_strategy", "every_save", "--bf16", "True", "--packing", "True", "--learning_rate", "1e-4",
            "--lr_scheduler_type", "cosine", "--weight_decay", "1e-4", "--warmup_ratio", "0.0", "--max_grad_norm",
            "1.0", "--output_dir", "llama-sft-qlora-dsz3", "--per_device_train_batch_size", "2",
            "--per_device_eval_batch_size", "2", "--gradient_accumulation_steps", "2", "--gradient_checkpointing",
            "True", "--use_reentrant", "True", "--dataset_text_field", "content", "--use_flash_attn", "True",
            "--use_peft_lora", "True", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.1",
            "--lora_target_modules", "all-linear", "--use_4bit_quantization", "True", "--use_nested_quant", "True",
            "--bnb_4bit_compute_dtype", "bfloat16", "--bnb_4bit_quant_storage_dtype", "bfloat16"};
}
}  // namespace

TEST_CASE("every flag of the seed's QLoRA command parses into the typed struct", "[config][train]") {
    auto parsed = parse_train_args(JobKind::kSft, seed_qlora_flags());
    const TrainArgs& a = parsed.args;
    CHECK(a.seed == 100);
    CHECK(a.model_name_or_path == "meta-llama/Llama-2-70b-hf");
    CHECK(a.chat_template_format == "chatml");
    CHECK_FALSE(a.add_special_tokens);
    CHECK(a.max_seq_length == 2048);  // via the --max_seq_len alias
    CHECK(a.num_train_epochs == 1.0);
    CHECK(a.push_to_hub);             // bare flag = True
    CHECK(a.hub_private_repo == std::optional<bool>(true));
    CHECK(a.packing);
    CHECK(a.learning_rate == 1e-4);
    CHECK(a.lr_scheduler_type == "cosine");
    CHECK(a.per_device_train_batch_size == 2);
    CHECK(a.gradient_accumulation_steps == 2);
    CHECK(a.use_reentrant);
    CHECK(a.lora_r == 8);
    CHECK(a.lora_target_modules == "all-linear");
    CHECK(a.use_4bit_quantization);
    CHECK(a.use_nested_quant);
    CHECK(a.bnb_4bit_quant_storage_dtype == "bfloat16");
    CHECK(a.was_given("max_seq_length"));
    REQUIRE(parsed.warnings.size() == 1);
    CHECK_THAT(parsed.warnings[0], Catch::Matchers::Contains("push_to_hub") &&
                                       Catch::Matchers::Contains("llama-sft-qlora-dsz3"));
}

TEST_CASE("defaults are SFTConfig's where it overrides TrainingArguments", "[config][train]") {
    auto a = parse_train_args(JobKind::kSft, {"--model_name_or_path", "m"}).args;
    CHECK(a.bf16);
    CHECK(a.gradient_checkpointing);
    CHECK(a.learning_rate == 2e-5);
    CHECK(a.max_seq_length == 1024);
    CHECK(a.lora_r == 64);
    CHECK(a.seed == 42);
    auto fp16 = parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--fp16", "True"}).args;
    CHECK_FALSE(fp16.bf16);
}

TEST_CASE("--gradient_checkpointing takes a boolean, bare or valued, or auto", "[config][train]") {
    auto parsed = [](std::vector<std::string> flags) {
        flags.insert(flags.begin(), {"--model_name_or_path", "m"});
        return parse_train_args(JobKind::kSft, flags).args;
    };
    const TrainArgs automatic = parsed({"--gradient_checkpointing", "auto", "--bf16", "False"});
    CHECK(automatic.gradient_checkpointing);
    CHECK(automatic.gradient_checkpointing_auto);
    CHECK_FALSE(automatic.bf16);
    CHECK(automatic.to_json()["gradient_checkpointing"] == "auto");
    const TrainArgs off = parsed({"--gradient_checkpointing=False"});
    CHECK_FALSE(off.gradient_checkpointing);
    CHECK_FALSE(off.gradient_checkpointing_auto);
    const TrainArgs bare = parsed({"--gradient_checkpointing", "--bf16", "False"});
    CHECK(bare.gradient_checkpointing);
    CHECK_FALSE(bare.gradient_checkpointing_auto);
    FTL_REQUIRE_ERROR(parsed({"--gradient_checkpointing=maybe"}), ErrorKind::kUsage, "--gradient_checkpointing",
                      "boolean", "or auto", "maybe");
}

TEST_CASE("the best-model flags take TrainingArguments' defaults and rules", "[config][train]") {
    auto parsed = [](std::vector<std::string> flags) {
        flags.insert(flags.begin(), {"--model_name_or_path", "m", "--eval_strategy", "steps", "--eval_steps", "5"});
        return parse_train_args(JobKind::kSft, flags).args;
    };
    const TrainArgs loaded = parsed({"--load_best_model_at_end", "True", "--save_steps", "10"});
    CHECK(loaded.metric_for_best_model == "loss");
    CHECK(loaded.greater_is_better == std::optional<bool>(false));
    CHECK(parsed({"--metric_for_best_model", "eval_perplexity"}).greater_is_better == std::optional<bool>(true));
    CHECK(parsed({"--save_strategy", "best"}).metric_for_best_model == "loss");
    FTL_REQUIRE_ERROR(parsed({"--load_best_model_at_end", "True", "--save_steps", "7"}), ErrorKind::kUsage,
                      "round multiple", "7", "5");
    FTL_REQUIRE_ERROR(parsed({"--load_best_model_at_end", "True", "--save_steps", "0.5"}), ErrorKind::kUsage,
                      "mixing ratio and absolute steps");
    FTL_REQUIRE_ERROR(parsed({"--load_best_model_at_end", "True", "--save_strategy", "epoch"}), ErrorKind::kUsage,
                      "Evaluation strategy: steps", "Save strategy: epoch");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--save_strategy", "best"}),
                      ErrorKind::kUsage, "--save_strategy best", "--eval_strategy");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--eval_on_start", "True"}),
                      ErrorKind::kUsage, "--eval_on_start", "--eval_strategy");
    CHECK(parsed({"--eval_on_start", "--disable_tqdm", "True"}).disable_tqdm);
}

TEST_CASE("logging and saving flags: token counts, model-only checkpoints, bitsandbytes optimizers", "[config][train]") {
    auto parsed = [](std::vector<std::string> flags) {
        flags.insert(flags.begin(), {"--model_name_or_path", "m"});
        return parse_train_args(JobKind::kSft, flags).args;
    };
    CHECK(parsed({}).include_num_input_tokens_seen == "no");
    CHECK(parsed({"--include_num_input_tokens_seen", "True"}).include_num_input_tokens_seen == "all");
    CHECK(parsed({"--include_num_input_tokens_seen", "false"}).include_num_input_tokens_seen == "no");
    CHECK(parsed({"--include_num_input_tokens_seen", "non_padding"}).include_num_input_tokens_seen == "non_padding");
    FTL_REQUIRE_ERROR(parsed({"--include_num_input_tokens_seen", "some"}), ErrorKind::kUsage,
                      "--include_num_input_tokens_seen", "some", "non_padding");
    CHECK(parsed({"--save_only_model", "True"}).save_only_model);
    CHECK(parsed({"--optim", "paged_adamw_8bit"}).optim == "paged_adamw_8bit");
    FTL_REQUIRE_ERROR(parsed({"--optim", "lion_8bit"}), ErrorKind::kUsage, "--optim", "lion_8bit", "adamw_8bit");
    // DataLoader/DDP tuning from HF commands is read; a pickled save format is refused.
    const TrainArgs tuned = parsed({"--dataloader_pin_memory", "False", "--ddp_find_unused_parameters", "False",
                                    "--dataloader_prefetch_factor", "2", "--eval_accumulation_steps", "4",
                                    "--remove_unused_columns", "False", "--local_rank", "0", "--dataloader_drop_last", "True"});
    CHECK(!tuned.dataloader_pin_memory);
    CHECK(tuned.dataloader_drop_last);
    CHECK(tuned.eval_accumulation_steps == std::optional<int>(4));
    FTL_REQUIRE_ERROR(parsed({"--save_safetensors", "False"}), ErrorKind::kUsage, "--save_safetensors", "safetensors only");
    // TRL's data preparation flags and the Trainer's sampling and NaN filter.
    const TrainArgs trl = parsed({"--packing_strategy", "bfd_split", "--truncation_mode", "keep_end", "--eval_packing",
                                  "False", "--dataset_num_proc", "4", "--completion_only_loss", "False",
                                  "--train_sampling_strategy", "sequential", "--logging_nan_inf_filter", "False"});
    CHECK(trl.packing_strategy == "bfd_split");
    CHECK(trl.truncation_mode == "keep_end");
    CHECK(trl.eval_packing == std::optional<bool>(false));
    CHECK(trl.dataset_num_proc == std::optional<int>(4));
    CHECK(!trl.completion_only_loss);
    CHECK(trl.train_sampling_strategy == "sequential");
    CHECK(!trl.logging_nan_inf_filter);
    CHECK(parsed({}).packing_strategy == "wrapped");
    CHECK(!parsed({}).eval_packing);
    FTL_REQUIRE_ERROR(parsed({"--packing_strategy", "greedy"}), ErrorKind::kUsage, "--packing_strategy", "greedy", "bfd");
    FTL_REQUIRE_ERROR(parsed({"--dataset_num_proc", "0"}), ErrorKind::kUsage, "--dataset_num_proc", "at least 1");
    CHECK(parsed({"--train_sampling_strategy", "group_by_length"}).train_sampling_strategy == "group_by_length");
    FTL_REQUIRE_ERROR(parsed({"--train_sampling_strategy", "batch_rebalance"}), ErrorKind::kUsage,
                      "--train_sampling_strategy", "batch_rebalance", "group_by_length");
    CHECK(parsed({"--chat_template_path", "t/chat.jinja"}).chat_template_path == "t/chat.jinja");
    FTL_REQUIRE_ERROR(parsed({"--chat_template_path", "Qwen/Qwen3-0.6B"}), ErrorKind::kUsage, "--chat_template_path",
                      ".jinja or .j2");
    FTL_REQUIRE_ERROR(parsed({"--chat_template_path", "c.j2", "--chat_template_format", "chatml"}), ErrorKind::kUsage,
                      "pass one");
    // --torch_compile and --use_liger_kernel are read, change nothing, and say so.
    const auto compiled = parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--torch_compile", "True",
                                                           "--use_liger_kernel", "True"});
    REQUIRE(compiled.warnings.size() == 2);
    CHECK_THAT(compiled.warnings[0], Catch::Matchers::Contains("--torch_compile True changes nothing"));
    CHECK_THAT(compiled.warnings[1], Catch::Matchers::Contains("--use_liger_kernel True changes nothing"));
    // reduce_lr_on_plateau steps with --metric_for_best_model ("loss" by default): it needs evaluations.
    const TrainArgs plateau = parsed({"--lr_scheduler_type", "reduce_lr_on_plateau", "--eval_strategy", "epoch"});
    CHECK(plateau.metric_for_best_model == "loss");
    FTL_REQUIRE_ERROR(parsed({"--lr_scheduler_type", "reduce_lr_on_plateau"}), ErrorKind::kUsage, "reduce_lr_on_plateau",
                      "--eval_strategy");
}

TEST_CASE("transformers 5's --activation_checkpointing names and its kwargs", "[config][train]") {
    auto parsed = [](std::vector<std::string> flags) {
        flags.insert(flags.begin(), {"--model_name_or_path", "m"});
        return parse_train_args(JobKind::kSft, flags).args;
    };
    const TrainArgs every = parsed({"--gradient_checkpointing", "False", "--activation_checkpointing", "True",
                                    "--activation_checkpointing_kwargs", R"({"every_n_layers": 3, "use_reentrant": true})"});
    CHECK(every.gradient_checkpointing);
    CHECK(every.checkpoint_every_n_layers == 3);
    CHECK(every.use_reentrant);
    CHECK(every.to_json()["activation_checkpointing_kwargs"]["every_n_layers"] == 3);
    const TrainArgs legacy = parsed({"--gradient_checkpointing_kwargs", R"({"use_reentrant": false, "preserve_rng_state": true})"});
    CHECK(legacy.checkpoint_every_n_layers == 1);
    CHECK_FALSE(legacy.use_reentrant);
    FTL_REQUIRE_ERROR(parsed({"--activation_checkpointing_kwargs", "[1]"}), ErrorKind::kUsage,
                      "--activation_checkpointing_kwargs", "JSON object");
    FTL_REQUIRE_ERROR(parsed({"--activation_checkpointing_kwargs", R"({"every_n_layers": 1.5})"}), ErrorKind::kUsage,
                      "every_n_layers", "integer", "1.5");
    FTL_REQUIRE_ERROR(parsed({"--gradient_checkpointing_kwargs", R"({"preserve_rng_state": false})"}), ErrorKind::kUsage,
                      "--gradient_checkpointing_kwargs", "preserve_rng_state", "dropout");
}

TEST_CASE("--name=value, hyphens and the three sequence-length spellings", "[config][train]") {
    for (const char* name : {"--max_length", "--max_seq_len", "--max_seq_length", "--max-seq-length"}) {
        auto a = parse_train_args(JobKind::kSft, {"--model_name_or_path=m", std::string(name) + "=512"}).args;
        CHECK(a.max_seq_length == 512);
    }
    auto a = parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--max_steps", "-1", "--packing"}).args;
    CHECK(a.max_steps == -1);
    CHECK(a.packing);
    CHECK(a.embeddings_on_host);  // ftlaunch's flag, on unless turned off
    CHECK_FALSE(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--embeddings_on_host", "False"}).args.embeddings_on_host);
    CHECK(a.fused_kernels);  // ftlaunch's flag, on unless turned off
    CHECK_FALSE(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--fused_kernels", "False"}).args.fused_kernels);
}

TEST_CASE("bad training flags are usage errors with a suggestion", "[config][train][errors]") {
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--learning_rat", "1e-4"}),
                      ErrorKind::kUsage, "unknown argument --learning_rat", "did you mean '--learning_rate'");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--lora_r", "eight"}),
                      ErrorKind::kUsage, "--lora_r", "integer", "eight");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--bf16", "--lora_dropout", "1.5"}),
                      ErrorKind::kUsage, "--lora_dropout", "[0, 1)", "1.5");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--chat_template_format", "llama"}),
                      ErrorKind::kUsage, "--chat_template_format", "chatml, zephyr, none", "llama");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--dataset_name", "d"}), ErrorKind::kUsage,
                      "--model_name_or_path is required");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--use_4bit_quantization", "True",
                                                       "--use_8bit_quantization", "True"}),
                      ErrorKind::kUsage, "4bit and 8bit quantization at the same time");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--splits", "train,validation"}),
                      ErrorKind::kUsage, "validation", "not recognized as one of test or train");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--seed"}), ErrorKind::kUsage,
                      "--seed", "expects a value");
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSft, {"model.safetensors"}), ErrorKind::kUsage,
                      "unexpected argument 'model.safetensors'");
}

TEST_CASE("job tokens: train, train.py, the seq2seq example script", "[config][train]") {
    CHECK(job_for_script("train") == std::optional<JobKind>(JobKind::kSft));
    CHECK(job_for_script("train.py") == std::optional<JobKind>(JobKind::kSft));
    CHECK(job_for_script("examples/sft/train.py") == std::optional<JobKind>(JobKind::kSft));
    CHECK(job_for_script("examples/peft_lora_seq2seq_accelerate_ds_zero3_offload.py") ==
          std::optional<JobKind>(JobKind::kSeq2seqExample));
    CHECK_FALSE(job_for_script("my_train_script.py").has_value());
    auto a = parse_train_args(JobKind::kSeq2seqExample, {}).args;
    CHECK(a.model_name_or_path == "facebook/bart-large");
    CHECK(a.lora_alpha == 32);
    CHECK(a.learning_rate == 3e-3);
    FTL_REQUIRE_ERROR(parse_train_args(JobKind::kSeq2seqExample, {"--train_sampling_strategy", "group_by_length"}),
                      ErrorKind::kUsage, "--train_sampling_strategy group_by_length", "shuffle=True");
}

TEST_CASE("--lora_target_parameters (TRL's flag) is a comma-separated list of PEFT target_parameters", "[config][train]") {
    auto a = parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--lora_target_parameters",
                                              "7.mlp.experts.gate_up_proj, 7.mlp.experts.down_proj,,router.weight"})
                 .args;
    CHECK(a.lora_target_parameters_list() ==
          std::vector<std::string>{"7.mlp.experts.gate_up_proj", "7.mlp.experts.down_proj", "router.weight"});
    CHECK(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m"}).args.lora_target_parameters_list().empty());
}

TEST_CASE("--loss_type (TRL's): nll, dft, and chunked_nll read as nll with a warning", "[config][train]") {
    CHECK(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m"}).args.loss_type == "nll");
    CHECK(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--loss_type", "dft"}).args.loss_type == "dft");
    auto chunked = parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--loss_type", "chunked_nll"});
    CHECK(chunked.args.loss_type == "nll");
    REQUIRE(chunked.warnings.size() == 1);
    CHECK_THAT(chunked.warnings[0], Catch::Matchers::Contains("deprecated"));
    CHECK_THROWS_AS(parse_train_args(JobKind::kSft, {"--model_name_or_path", "m", "--loss_type", "focal"}), ftl::Error);
}
