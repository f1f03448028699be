// The accelerate config file (`accelerate config` writes it; `accelerate launch --config_file`
// reads it): every key of accelerate's ClusterConfig, typed. Parsing checks each value's type
// and allowed set and reports "file:line: key: rule (got value)". Unknown keys are kept out
// and reported as warnings naming the closest known key.
// Source of the schema: accelerate/commands/config/config_args.py (ClusterConfig, BaseConfig).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ftl::config {

enum class DistributedType {
    kNo, kMultiCpu, kMultiGpu, kMultiNpu, kMultiMlu, kMultiSdaa, kMultiMusa, kMultiXpu,
    kMultiHpu, kMultiNeuron, kDeepSpeed, kFsdp, kXla, kMegatronLm,
};
enum class MixedPrecision { kNo, kFp16, kBf16, kFp8 };
enum class OffloadDevice { kNone, kCpu, kNvme };
enum class MultinodeLauncher { kPdsh, kStandard, kOpenmpi, kMvapich, kMpich, kNossh, kSlurm };

std::string to_string(DistributedType v);
std::string to_string(MixedPrecision v);
std::string to_string(OffloadDevice v);
std::string to_string(MultinodeLauncher v);
// Parsers return nullopt for a value outside the allowed set; allowed_*() list that set.
std::optional<DistributedType> parse_distributed_type(const std::string& s);
std::optional<MixedPrecision> parse_mixed_precision(const std::string& s);
std::optional<OffloadDevice> parse_offload_device(const std::string& s);
std::optional<MultinodeLauncher> parse_multinode_launcher(const std::string& s);
std::vector<std::string> allowed_distributed_types();
std::vector<std::string> allowed_mixed_precisions();
std::vector<std::string> allowed_offload_devices();
std::vector<std::string> allowed_multinode_launchers();

// `deepspeed_config:` sub-keys. Unset (nullopt) means "not in the file"; for
// gradient_accumulation_steps and gradient_clipping that is DeepSpeed's "auto".
struct AccelerateDeepSpeedSection {
    std::optional<std::string> deepspeed_config_file;  // a DeepSpeed JSON; excludes the keys below
    std::optional<std::string> deepspeed_hostfile;     // rows "hostname slots=N"
    std::optional<std::string> deepspeed_exclusion_filter;
    std::optional<std::string> deepspeed_inclusion_filter;
    std::optional<MultinodeLauncher> deepspeed_multinode_launcher;  // accelerate's default: pdsh
    std::optional<int> zero_stage;                     // 0..3; accelerate's default: 2
    std::optional<int> gradient_accumulation_steps;    // >= 1
    std::optional<double> gradient_clipping;           // > 0
    std::optional<OffloadDevice> offload_optimizer_device;
    std::optional<OffloadDevice> offload_param_device;
    std::optional<std::string> offload_optimizer_nvme_path;
    std::optional<std::string> offload_param_nvme_path;
    std::optional<bool> zero3_init_flag;
    std::optional<bool> zero3_save_16bit_model;
    std::optional<std::string> deepspeed_moe_layer_cls_names;
    std::vector<std::string> keys_in_file;  // for ACCELERATE_CONFIG_DS_FIELDS, in file order
};

struct AccelerateConfig {
    std::string source;  // the file it came from, "" for built-in defaults
    std::string compute_environment = "LOCAL_MACHINE";  // or AMAZON_SAGEMAKER (refused later)
    DistributedType distributed_type = DistributedType::kNo;
    std::optional<MixedPrecision> mixed_precision;       // unset: launch uses "no"
    bool mixed_precision_from_file = false;
    bool use_cpu = false;
    bool debug = false;
    bool enable_cpu_affinity = false;
    std::optional<int> num_processes;  // total over all machines; -1 in the file = "pass it"
    int num_machines = 1;
    int machine_rank = 0;
    std::optional<std::string> gpu_ids;          // "all" or "0,1,..."
    std::optional<std::string> main_process_ip;  // MASTER_ADDR
    std::optional<int> main_process_port;        // MASTER_PORT; default 29500, 0 = a free port
    std::string rdzv_backend = "static";
    bool same_network = false;
    std::string main_training_function = "main";
    // XLA only. Kept as written, a bool or accelerate's string 'no'/'yes', so it is written back
    // the same way accelerate would (it reads a missing key as false).
    nlohmann::json downcast_bf16 = false;
    AccelerateDeepSpeedSection deepspeed;
    // Sections ftlaunch reads but whose content only matters for other backends; kept as given
    // (fsdp_config is mapped onto ZeRO when distributed_type is FSDP).
    nlohmann::json fsdp_config = nlohmann::json::object();
    nlohmann::json megatron_lm_config = nlohmann::json::object();
    nlohmann::json dynamo_config = nlohmann::json::object();
    nlohmann::json fp8_config = nlohmann::json::object();
    nlohmann::json mpirun_config = nlohmann::json::object();
    nlohmann::json parallelism_config = nlohmann::json::object();
    // TPU pod keys: accepted, unused.
    std::optional<std::string> tpu_name, tpu_zone, command_file, tpu_vm;
    bool tpu_use_cluster = false, tpu_use_sudo = false;
    std::vector<std::string> commands, tpu_env;

    nlohmann::json to_json() const;  // accelerate's key names and value spellings
};

struct ParsedAccelerateConfig {
    AccelerateConfig config;
    std::vector<std::string> warnings;  // unknown keys, legacy keys converted
};

// Reads and validates a YAML (or .json) accelerate config file. Throws ftl::Error(kConfig)
// naming the file, line, key, value and rule on the first bad value; kIo if unreadable.
ParsedAccelerateConfig load_accelerate_config(const std::string& path);
// Same, from text already in memory (`source` names it in messages).
ParsedAccelerateConfig parse_accelerate_config(const std::string& text, const std::string& source);

// Where accelerate looks when --config_file is not given:
// $HF_HOME/accelerate/default_config.yaml, else ${XDG_CACHE_HOME:-~/.cache}/huggingface/accelerate/...
std::string default_accelerate_config_path();

// YAML text for a config, keys sorted as accelerate's yaml.safe_dump writes them, empty
// sections and unset values left out.
std::string to_yaml(const AccelerateConfig& config);

}  // namespace ftl::config
