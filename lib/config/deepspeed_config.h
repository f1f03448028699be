// The DeepSpeed runtime config, typed: built from the accelerate YAML's deepspeed_config keys
// (accelerate's DeepSpeedPlugin, "Step A") or read from a DeepSpeed JSON file, then given the
// mixed precision ("Step B") and the "auto" values filled from the training flags the way the
// HF Trainer does ("Step C"). A concrete value that disagrees with a flag is an error listing
// every mismatch. Sources: accelerate/utils/dataclasses.py (DeepSpeedPlugin),
// transformers/integrations/deepspeed.py (HfTrainerDeepSpeedConfig); research/seed-systems.md §3.6.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
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
    nlohmann::json optimizer;        // {type, params} or null: ftlaunch's AdamW from the flags
    nlohmann::json scheduler;        // {type, params} or null: the flags' lr_scheduler_type
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

}  // namespace ftl::config
