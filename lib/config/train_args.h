// The training job's flags: peft examples/sft/train.py's ModelArguments and
// DataTrainingArguments, plus the HF TrainingArguments / TRL SFTConfig fields the seed scripts
// pass. Parsed like HfArgumentParser: `--name value`, `--name=value`, booleans take a value
// (`--bf16 True`) or stand alone (`--push_to_hub` = True); unknown flags are an error with a
// suggestion. Defaults are those of the Python sources (SFTConfig where it overrides
// TrainingArguments); see research/seed-systems.md §1.2–1.5.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ftl::config {

// Which built-in job a launch runs. `train` / `train.py` is peft's examples/sft/train.py;
// `peft_lora_seq2seq_accelerate_ds_zero3_offload.py` is peft's BART seq2seq example, whose
// hyperparameters are fixed in the script (flags may still override them here).
enum class JobKind { kSft, kSeq2seqExample, kEvaluate, kEstimateMemory };
std::string to_string(JobKind kind);

// Maps the job token of a launch command (`train`, `train.py`, `examples/sft/train.py`,
// `.../peft_lora_seq2seq_accelerate_ds_zero3_offload.py`) to a job; nullopt if it is none.
std::optional<JobKind> job_for_script(const std::string& token);
std::vector<std::string> known_job_tokens();

struct TrainArgs {
    JobKind job = JobKind::kSft;

    // ---- ModelArguments ----
    std::string model_name_or_path;           // required: a local folder or org/name in the hub cache
    std::string model_revision = "main";      // hub-cache snapshot to use
    // TRL ModelConfig's --dtype (formerly --torch_dtype): the type the model loads in; "auto" =
    // config.json's. Empty = the seed's train.py: fp32, or a 4-bit run's float storage type.
    std::string torch_dtype;
    std::string adapter_path;                 // evaluate: a PEFT adapter folder to apply
    std::string chat_template_format = "none";  // chatml | zephyr | none
    // SFTConfig's chat_template_path: a .jinja/.j2 file that replaces the tokenizer's template
    // (under --chat_template_format none). Empty: the tokenizer's own.
    std::string chat_template_path;
    int lora_alpha = 16;
    double lora_dropout = 0.1;                // probability, [0, 1)
    int lora_r = 64;
    std::string lora_target_modules = "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj";
    // TRL's lora_target_parameters, comma-separated: a MoE model's expert stacks and routers adapted as
    // parameters (PEFT's target_parameters, e.g. 7.mlp.experts.gate_up_proj,7.mlp.experts.down_proj).
    std::string lora_target_parameters;
    std::vector<std::string> lora_target_parameters_list() const;
    bool use_rslora = false;                  // scaling alpha/sqrt(r) instead of alpha/r
    bool use_dora = false;                    // PEFT's DoRA: a trained magnitude per output row
    bool use_nested_quant = false;
    std::string bnb_4bit_compute_dtype = "float16";
    std::string bnb_4bit_quant_storage_dtype = "uint8";
    std::string bnb_4bit_quant_type = "nf4";
    bool use_flash_attn = false;
    bool use_peft_lora = false;
    bool use_8bit_quantization = false;
    bool use_4bit_quantization = false;
    bool use_reentrant = false;               // also --activation_checkpointing_kwargs' use_reentrant
    bool use_unsloth = false;

    // ---- DataTrainingArguments and SFTConfig data fields ----
    std::string dataset_name = "timdettmers/openassistant-guanaco";
    bool append_concat_token = false;
    bool add_special_tokens = false;
    std::string splits = "train,test";
    std::string dataset_text_field = "text";
    int max_seq_length = 1024;                // tokens; also --max_length, --max_seq_len
    bool packing = false;
    // SFTConfig's packing_strategy: "wrapped" (data/examples.h: rows of max_seq_length, documents
    // kept apart), "bfd" or "bfd_split" (TRL's best-fit decreasing, data/best_fit_packing.h).
    std::string packing_strategy = "wrapped";
    // SFTConfig's truncation_mode: without packing, which end of a longer example a row keeps.
    std::string truncation_mode = "keep_start";
    std::optional<bool> eval_packing;         // SFTConfig's; unset: as --packing
    // SFTConfig's: TRL's dataset preparation in this many processes, which changes only how
    // "bfd" packing batches the records (data/best_fit_packing.h); ftlaunch tokenizes in one.
    std::optional<int> dataset_num_proc;
    bool assistant_only_loss = false;
    bool completion_only_loss = true;         // SFTConfig's; its None means true for prompt-completion data
    // The seq2seq example's columns and lengths (data/seq2seq.h): source text, label (text, or a
    // class index named by the dataset's class names), at most max_source_length source tokens
    // (default: the tokenizer's model_max_length) and max_target_length target tokens (default:
    // the longest target).
    std::string text_column = "Tweet text";
    std::string label_column = "Label";
    std::optional<int> max_source_length;
    std::optional<int> max_target_length;

    // ---- TrainingArguments ----
    int seed = 42;
    double num_train_epochs = 3.0;
    int max_steps = -1;                       // > 0 overrides num_train_epochs
    double logging_steps = 10;                // < 1: a ratio of total steps
    std::string log_level = "passive";
    std::string log_level_replica = "warning";
    std::string logging_strategy = "steps";
    std::string logging_dir;                  // TensorBoard folder; empty: $TENSORBOARD_LOGGING_DIR, else output_dir/runs/<date>_<host>
    bool logging_first_step = false;
    // A micro-batch's NaN or infinite training loss is logged as the mean of the interval so far,
    // and non-finite evaluation batches are left out of eval_loss (TrainingArguments' default).
    bool logging_nan_inf_filter = true;
    // or "sequential" (rows in dataset order), "group_by_length" (train::length_grouped_order)
    std::string train_sampling_strategy = "random";
    std::string eval_strategy = "no";
    std::optional<double> eval_steps;
    bool eval_on_start = false;               // evaluate once before the first step (a sanity check)
    bool disable_tqdm = false;                // no progress bar
    double eval_delay = 0.0;                  // no evaluation before this step (or epoch, under eval_strategy epoch)
    std::optional<int> data_seed;             // the sampler's seed (else --seed)
    bool save_only_model = false;             // checkpoints without optimizer and generator state
    // Logged num_input_tokens_seen: "all" input_ids elements, "non_padding" ones, or "no".
    std::string include_num_input_tokens_seen = "no";
    std::string save_strategy = "steps";       // no, steps, epoch, best (when an evaluation is a new best)
    double save_steps = 500;
    std::optional<int> save_total_limit;
    // The best-model rules (validate fills the defaults: metric "loss" for load_best_model_at_end and
    // save_strategy best; greater_is_better unless the metric ends in "loss").
    bool load_best_model_at_end = false;
    std::string metric_for_best_model;        // loss or perplexity, with or without eval_; "" = none
    std::optional<bool> greater_is_better;
    bool push_to_hub = false;                 // accepted; no network: a warning
    std::optional<bool> hub_private_repo;
    std::string hub_strategy = "every_save";
    std::string hub_model_id;
    std::string hub_token;
    bool bf16 = true;                         // SFTConfig: true unless --fp16
    bool fp16 = false;
    double learning_rate = 2e-5;
    std::string lr_scheduler_type = "linear";
    nlohmann::json lr_scheduler_kwargs = nlohmann::json::object();  // the schedule's parameters (optim/schedule.h)
    double weight_decay = 0.0;
    double warmup_ratio = 0.0;
    double warmup_steps = 0;                  // int = steps; float in [0,1) = ratio
    double max_grad_norm = 1.0;               // 0 disables clipping
    std::optional<double> neftune_noise_alpha;  // NEFTune's noise on the input embeddings in training
    // TRL's router_aux_loss_coef: the weight of a MoE model's load-balancing loss; unset, the model
    // config's router_aux_loss_coef; 0 turns the loss off (model/router_balance.h).
    std::optional<double> router_aux_loss_coef;
    // TRL's loss_type: nll, dft (Dynamic Fine-Tuning: each token's loss weighted by its detached
    // target probability), or chunked_nll (deprecated in TRL: nll).
    std::string loss_type = "nll";
    std::string output_dir = "trainer_output";
    bool overwrite_output_dir = false;
    int per_device_train_batch_size = 8;
    int per_device_eval_batch_size = 8;
    int gradient_accumulation_steps = 1;
    bool gradient_checkpointing = true;
    // --gradient_checkpointing auto (ftlaunch's): checkpointing on, but the last decoder layers whose
    // activations fit in the rank's memory keep them (train::layers_kept_in_memory).
    bool gradient_checkpointing_auto = false;
    // --activation_checkpointing_kwargs (alias --gradient_checkpointing_kwargs), as given, and its
    // every_n_layers: with checkpointing, only the layers whose index is a multiple of it are
    // recomputed (transformers' _set_gradient_checkpointing), the rest keep their activations.
    nlohmann::json activation_checkpointing_kwargs;
    int checkpoint_every_n_layers = 1;
    // --embeddings_on_host (ftlaunch's): LoRA on a GPU keeps the frozen input embeddings in pinned
    // host memory and copies up only each micro-batch's rows (train::embeddings_stay_on_host).
    bool embeddings_on_host = true;
    // --fused_kernels (ftlaunch's): on a GPU, the fused RMSNorm/SwiGLU/RoPE kernels and
    // variable-length flash attention; False runs the composites of ATen ops (model::ForwardOptions).
    bool fused_kernels = true;
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_epsilon = 1e-8;
    std::string optim = "adamw_torch_fused";
    std::string resume_from_checkpoint;
    std::string report_to = "none";
    std::string run_name;
    bool dataloader_drop_last = false;        // leave out each epoch's short last batch
    // PyTorch DataLoader and DDP tuning. ftlaunch has neither (batches are collated in the trainer
    // loop, gradients reduced by its own buckets), so these are read, for HF commands to run
    // unchanged, and change nothing that is computed.
    int dataloader_num_workers = 0;
    bool dataloader_pin_memory = true;
    bool dataloader_persistent_workers = false;
    std::optional<int> dataloader_prefetch_factor;
    std::optional<bool> ddp_find_unused_parameters;
    std::optional<int> eval_accumulation_steps;  // evaluation keeps only the loss: no logits to accumulate
    bool remove_unused_columns = true;           // the dataset's columns are read by name (--dataset_text_field, ...)
    int local_rank = -1;                         // set by torch.distributed.launch; ftlaunch assigns ranks itself
    bool torch_compile = false;                  // there is no Python graph to compile: a warning says so
    bool use_liger_kernel = false;               // Liger's fused kernels and chunked loss are ftlaunch's own: a warning says so
    bool save_safetensors = true;                // only safetensors are written
    int ddp_timeout = 1800;                   // seconds a collective may wait
    bool do_train = false;
    bool do_eval = false;
    std::string deepspeed;                    // HF's --deepspeed ds_config.json

    std::set<std::string> given;              // canonical names of the flags on the command line

    bool was_given(const std::string& name) const { return given.count(name) > 0; }
    nlohmann::json to_json() const;
};

struct ParsedTrainArgs {
    TrainArgs args;
    std::vector<std::string> warnings;  // hub flags without network, overridden settings
};

// The bits of the optimizer state --optim keeps with bitsandbytes' AdamW: 8 (adamw_bnb_8bit,
// adamw_8bit, paged_adamw_8bit), 32 (paged_adamw_32bit), or 0 for torch's AdamW.
int bitsandbytes_state_bits(const std::string& optim);

// --report_to as HF TrainingArguments reads it: "none", "all" (every integration this build has:
// TensorBoard), or integration names separated by commas ("tensorboard,wandb").
struct ReportTargets {
    bool tensorboard = false;
    std::vector<std::string> online;  // integrations that send to a service: warned about, nothing is sent
};
// Throws ftl::Error(kUsage) naming an integration HF does not know, with the known names.
ReportTargets report_targets(const std::string& report_to);

// Defaults for a job: SFT defaults, or the seq2seq example's hard-coded hyperparameters.
TrainArgs default_train_args(JobKind job);

// Parses the flags after the job token. Throws ftl::Error(kUsage) for an unknown flag (with the
// closest known one), a missing or malformed value, or a value outside its allowed set.
ParsedTrainArgs parse_train_args(JobKind job, const std::vector<std::string>& argv);

// Every flag name the parser knows (for suggestions and docs).
std::vector<std::string> known_train_flags();

}  // namespace ftl::config
