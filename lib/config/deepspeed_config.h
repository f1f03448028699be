// The DeepSpeed runtime config, typed: built from the accelerate YAML's deepspeed_config keys
// (accelerate's DeepSpeedPlugin, "Step A") or read from a DeepSpeed JSON file, then given the
// mixed precision ("Step B") and the "auto" values filled from the training flags the way the
// HF Trainer does ("Step C"). A concrete value that disagrees with a flag is an error listing
// every mismatch. Sources: accelerate/utils/dataclasses.py (DeepSpeedPlugin),
// transformers/integrations/deepspeed.py (HfTrainerDeepSpeedConfig); research/seed-systems.md §3.6.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/accelerate_config.h"
#include "config/train_args.h"

namespace ftl::config {

// A value that may be "auto" until resolved: nullopt = auto.
template <typename T>
using Auto = std::optional<T>;

struct OffloadOptimizerConfig {
    OffloadDevice device = OffloadDevice::kNone;
    std::string nvme_path;       // required when device == nvme
    bool pin_memory = false;
    int buffer_count = 4;
    bool fast_init = false;
};

struct OffloadParamConfig {
    OffloadDevice device = OffloadDevice::kNone;
    std::string nvme_path;       // required when device == nvme
    bool pin_memory = false;
    int buffer_count = 5;
    long long buffer_size = 100'000'000;   // elements
    long long max_in_cpu = 1'000'000'000;  // elements
};

struct ZeroOptimizationConfig {
    int stage = 0;
    OffloadOptimizerConfig offload_optimizer;
    OffloadParamConfig offload_param;
    std::optional<bool> overlap_comm;             // DeepSpeed: true for stage 3, else false
    bool contiguous_gradients = true;
    bool reduce_scatter = true;
    bool allgather_partitions = true;
    bool round_robin_gradients = false;
    long long allgather_bucket_size = 500'000'000;        // elements
    Auto<long long> reduce_bucket_size = 500'000'000;     // auto: hidden_size^2
    Auto<long long> stage3_prefetch_bucket_size = 50'000'000;  // auto: 0.9 * hidden_size^2
    Auto<long long> stage3_param_persistence_threshold = 100'000;  // auto: 10 * hidden_size
    long long stage3_max_live_parameters = 1'000'000'000;
    long long stage3_max_reuse_distance = 1'000'000'000;
    long long sub_group_size = 1'000'000'000;
    bool stage3_gather_16bit_weights_on_model_save = false;
};

struct Fp16Config {
    bool enabled = false;
    bool auto_cast = false;
    double loss_scale = 0;          // 0 = dynamic loss scaling
    int initial_scale_power = 16;   // initial dynamic scale 2^power
    int loss_scale_window = 1000;
    int hysteresis = 2;
    double min_loss_scale = 1;
};

struct AioConfig {
    long long block_size = 1'048'576;  // bytes
    int queue_depth = 8;
    int thread_count = 1;
    bool single_submit = false;
    bool overlap_events = true;
};

// "optimizer": DeepSpeed builds the optimizer from it (the HF Trainer hands DeepSpeed a DummyOptim)
// as one group over every trainable tensor, so weight decay applies to all of them. ftlaunch builds
// the kinds DeepSpeed's Adam/AdamW types name with decoupled weight decay (adam_w_mode, on by
// default), bias correction and no amsgrad; other types are an error.
// Each value is nullopt for "auto" until the flags fill it; a key the section leaves out holds
// DeepSpeed's default (FusedAdam's / DeepSpeedCPUAdam's), which the flags do not change.
struct DeepSpeedOptimizerConfig {
    std::string type;  // as written: "AdamW", "Adam", ...
    Auto<double> lr = 1e-3;
    Auto<double> beta1 = 0.9;  // "betas": [beta1, beta2], or "auto" for both
    Auto<double> beta2 = 0.999;
    Auto<double> eps = 1e-8;
    Auto<double> weight_decay = 0.0;
    std::set<std::string> given;  // the params the section names (only these must agree with the flags)
};

// "scheduler": DeepSpeed's schedule replaces the flags' --lr_scheduler_type (optim/schedule.h has
// the formulas). Values as in DeepSpeedOptimizerConfig: nullopt = "auto" until resolved, DeepSpeed's
// defaults for keys left out.
struct DeepSpeedSchedulerConfig {
    std::string type;                 // WarmupLR, WarmupDecayLR or WarmupCosineLR
    Auto<double> warmup_min_lr = 0.0;     // WarmupLR, WarmupDecayLR
    Auto<double> warmup_max_lr = 1e-3;    // WarmupDecayLR's default; WarmupLR's is the optimizer's lr
    double warmup_min_ratio = 0.0;        // WarmupCosineLR
    double cos_min_ratio = 1e-4;          // WarmupCosineLR
    Auto<long long> warmup_num_steps = 1000;
    Auto<long long> total_num_steps;      // required by WarmupDecayLR and WarmupCosineLR
    bool log_warmup = true;               // warmup_type "log" (DeepSpeed's default) or "linear"
    std::set<std::string> given;
};

struct DeepSpeedConfig {
    std::string source;  // JSON file, or "accelerate config deepspeed_config" for YAML-built ones
    Auto<long long> train_batch_size;
    Auto<long long> train_micro_batch_size_per_gpu;
    Auto<long long> gradient_accumulation_steps;
    Auto<double> gradient_clipping;  // 0 disables
    ZeroOptimizationConfig zero_optimization;
    bool zero3_init_flag = false;    // accelerate's zero3_init_flag (not a DeepSpeed key)
    Auto<bool> bf16_enabled = false;
    Fp16Config fp16;
    Auto<bool> fp16_enabled = false;
    std::optional<DeepSpeedOptimizerConfig> optimizer;  // none: the Trainer's AdamW from the flags
    std::optional<DeepSpeedSchedulerConfig> scheduler;  // none: the flags' --lr_scheduler_type
    AioConfig aio;
    bool zero_allow_untested_optimizer = true;
    std::string communication_data_type;  // "" = the gradients' own dtype

    nlohmann::json to_json() const;  // DeepSpeed's key names; unresolved autos print as "auto"
};

struct BuiltDeepSpeedConfig {
    DeepSpeedConfig config;
    std::vector<std::string> warnings;
};

// Step A, without a JSON file: the accelerate YAML's deepspeed_config keys. `source` names the
// YAML file in messages.
BuiltDeepSpeedConfig deepspeed_config_from_accelerate(const AccelerateDeepSpeedSection& section,
                                                      const std::string& source);
// Step A, with a JSON file (accelerate's deepspeed_config_file or HF's --deepspeed).
BuiltDeepSpeedConfig load_deepspeed_json(const std::string& path);
BuiltDeepSpeedConfig parse_deepspeed_json(const std::string& text, const std::string& source);

// Step B: the launch's mixed precision. Throws kConfig if the file enables the other one.
void apply_mixed_precision(DeepSpeedConfig& ds, MixedPrecision mp);

// Step C: fill "auto" from the flags; throw kConfig listing every concrete value that
// disagrees with a flag ("- ds X=.. vs hf Y=..", HF's wording). world_size = total ranks.
void resolve_with_train_args(DeepSpeedConfig& ds, const TrainArgs& args, int world_size);

// The hidden-size "auto" keys, once the model's config.json is known.
void resolve_with_hidden_size(DeepSpeedConfig& ds, long long hidden_size);

// The scheduler's step counts once the run's length is known (HF's trainer_config_finalize):
// total_num_steps from `total_steps`, warmup_num_steps from max(1, `warmup_steps`); throws kConfig
// listing a concrete value that differs. WarmupLR without warmup_max_lr takes the optimizer's lr.
void resolve_with_steps(DeepSpeedConfig& ds, long long total_steps, long long warmup_steps, double optimizer_lr);

}  // namespace ftl::config
