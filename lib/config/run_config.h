// Everything one launch needs to know, resolved and validated in one place: the accelerate
// config file, the launcher flags that override it (as `accelerate launch` flags do), the
// DeepSpeed config with its "auto" values filled, and the job's training flags.
// Precedence: built-in defaults < config file < launcher flags; train flags fill DeepSpeed autos.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/accelerate_config.h"
#include "config/deepspeed_config.h"
#include "config/train_args.h"

namespace ftl::config {

// `accelerate launch` flags that ftlaunch accepts before the job token; unset = not given.
struct LauncherFlags {
    std::optional<std::string> config_file;
    bool dry_run = false;
    std::optional<bool> use_cpu;
    std::optional<bool> multi_gpu;
    std::optional<bool> use_deepspeed;
    std::optional<bool> debug;
    std::optional<int> num_processes;
    std::optional<int> num_machines;
    std::optional<int> machine_rank;
    std::optional<std::string> main_process_ip;
    std::optional<int> main_process_port;
    std::optional<std::string> mixed_precision;
    std::optional<std::string> gpu_ids;
    std::optional<std::string> rdzv_backend;
    std::optional<bool> same_network;
    std::optional<std::string> deepspeed_config_file;
    std::optional<std::string> deepspeed_hostfile;
    std::optional<std::string> deepspeed_multinode_launcher;
    std::optional<int> zero_stage;
    std::optional<int> gradient_accumulation_steps;
    std::optional<double> gradient_clipping;
    std::optional<std::string> offload_optimizer_device;
    std::optional<std::string> offload_param_device;
    std::optional<std::string> offload_optimizer_nvme_path;
    std::optional<std::string> offload_param_nvme_path;
    std::optional<bool> zero3_init_flag;
    std::optional<bool> zero3_save_16bit_model;
};

struct RunConfig {
    AccelerateConfig accelerate;       // after launcher-flag overrides
    bool uses_deepspeed = false;       // DEEPSPEED (or FSDP mapped onto ZeRO)
    DeepSpeedConfig deepspeed;         // stage 0 (plain data parallel) when not DeepSpeed
    MixedPrecision mixed_precision = MixedPrecision::kNo;  // what the job will run
    TrainArgs train;
    std::string job_token;             // as typed: train, train.py, path/to/script.py
    std::vector<std::string> job_argv; // the job's flags as typed, forwarded to workers
    int world_size = 1;
    int processes_per_machine = 1;
    std::vector<std::string> warnings;

    nlohmann::json to_json() const;
};

// Loads the config file (flags.config_file, else accelerate's default path if it exists, else
// built-in single-process defaults), applies the flags, parses the job's flags and resolves
// DeepSpeed. Throws ftl::Error(kConfig/kUsage) on any inconsistency.
RunConfig resolve_run_config(const LauncherFlags& flags, const std::string& job_token,
                             const std::vector<std::string>& job_argv);

// The type (config.json's names: "bfloat16", "float16", "float32") LoRA keeps its frozen base in:
// DeepSpeed's bf16/fp16 engine (and FSDP's mixed precision) casts the whole module to its 16-bit
// type; otherwise the type the model loads in: --torch_dtype ("auto": `checkpoint_dtype`, or
// float32 when the checkpoint names none), else a 4-bit run's float storage type (the seed's
// train.py loads with it), else float32. The residual stream runs in the embeddings' type.
// Independently, under autocast the decoder's linears and an untied head are kept in the autocast
// type (autocast rounds them to it at every use: the same products).
std::string frozen_base_dtype(const RunConfig& run, const std::string& checkpoint_dtype);

// The accelerate config alone (for `ftlaunch test` and `env`): file or defaults, plus flags.
struct ResolvedAccelerate {
    AccelerateConfig config;
    std::vector<std::string> warnings;
};
ResolvedAccelerate resolve_accelerate_config(const LauncherFlags& flags);

}  // namespace ftl::config
