#include "config/run_config.h"

#include <cstdlib>

#include <filesystem>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

namespace {

[[noreturn]] void config_error(const std::string& message) { ftl::fail(ErrorKind::kConfig, message); }

template <typename Enum>
Enum flag_enum(const std::string& flag, const std::string& value,
               std::optional<Enum> (*parse)(const std::string&), const std::vector<std::string>& allowed) {
    auto v = parse(value);
    if (!v) ftl::fail(ErrorKind::kUsage, "--" + flag + ": must be one of " + join(allowed, ", ") + " (got '" + value + "')");
    return *v;
}

void apply_flags(const LauncherFlags& f, AccelerateConfig& c) {
    if (f.use_cpu) c.use_cpu = *f.use_cpu;
    if (f.debug) c.debug = *f.debug;
    if (f.num_processes) c.num_processes = *f.num_processes;
    if (f.num_machines) c.num_machines = *f.num_machines;
    if (f.machine_rank) c.machine_rank = *f.machine_rank;
    if (f.main_process_ip) c.main_process_ip = *f.main_process_ip;
    if (f.main_process_port) c.main_process_port = *f.main_process_port;
    if (f.gpu_ids) c.gpu_ids = *f.gpu_ids;
    if (f.rdzv_backend) c.rdzv_backend = *f.rdzv_backend;
    if (f.same_network) c.same_network = *f.same_network;
    if (f.mixed_precision)
        c.mixed_precision = flag_enum<MixedPrecision>("mixed_precision", *f.mixed_precision,
                                                      parse_mixed_precision, allowed_mixed_precisions());
    const int paradigms = (f.use_cpu.value_or(false) && f.multi_gpu.value_or(false)) +
                          (f.multi_gpu.value_or(false) && f.use_deepspeed.value_or(false));
    if (paradigms)
        ftl::fail(ErrorKind::kUsage, "You can only use one of `--cpu`, `--multi_gpu`, `--use_deepspeed` at a time.");
    if (f.multi_gpu.value_or(false)) c.distributed_type = DistributedType::kMultiGpu;
    if (f.use_deepspeed.value_or(false)) c.distributed_type = DistributedType::kDeepSpeed;

    auto& ds = c.deepspeed;
    const bool any_ds_flag = f.deepspeed_config_file || f.deepspeed_hostfile || f.deepspeed_multinode_launcher ||
                             f.zero_stage || f.gradient_clipping || f.offload_optimizer_device ||
                             f.offload_param_device || f.offload_optimizer_nvme_path ||
                             f.offload_param_nvme_path || f.zero3_init_flag || f.zero3_save_16bit_model;
    if (any_ds_flag && c.distributed_type != DistributedType::kDeepSpeed)
        ftl::fail(ErrorKind::kUsage, "DeepSpeed flags (--zero_stage, --offload_*, --deepspeed_*, ...) need "
                                     "distributed_type: DEEPSPEED in the config file or --use_deepspeed (got "
                                     "distributed_type " + to_string(c.distributed_type) + ")");
    if (f.deepspeed_config_file) ds.deepspeed_config_file = *f.deepspeed_config_file;
    if (f.deepspeed_hostfile) ds.deepspeed_hostfile = *f.deepspeed_hostfile;
    if (f.deepspeed_multinode_launcher)
        ds.deepspeed_multinode_launcher = flag_enum<MultinodeLauncher>(
            "deepspeed_multinode_launcher", *f.deepspeed_multinode_launcher, parse_multinode_launcher,
            allowed_multinode_launchers());
    if (f.zero_stage) {
        if (*f.zero_stage < 0 || *f.zero_stage > 3)
            ftl::fail(ErrorKind::kUsage, "--zero_stage: must be one of 0, 1, 2, 3 (got " + std::to_string(*f.zero_stage) + ")");
        ds.zero_stage = *f.zero_stage;
    }
    if (f.gradient_accumulation_steps) ds.gradient_accumulation_steps = *f.gradient_accumulation_steps;
    if (f.gradient_clipping) ds.gradient_clipping = *f.gradient_clipping;
    if (f.offload_optimizer_device)
        ds.offload_optimizer_device = flag_enum<OffloadDevice>("offload_optimizer_device", *f.offload_optimizer_device,
                                                               parse_offload_device, allowed_offload_devices());
    if (f.offload_param_device)
        ds.offload_param_device = flag_enum<OffloadDevice>("offload_param_device", *f.offload_param_device,
                                                           parse_offload_device, allowed_offload_devices());
    if (f.offload_optimizer_nvme_path) ds.offload_optimizer_nvme_path = *f.offload_optimizer_nvme_path;
    if (f.offload_param_nvme_path) ds.offload_param_nvme_path = *f.offload_param_nvme_path;
    if (f.zero3_init_flag) ds.zero3_init_flag = *f.zero3_init_flag;
    if (f.zero3_save_16bit_model) ds.zero3_save_16bit_model = *f.zero3_save_16bit_model;
}

void validate_topology(const AccelerateConfig& c) {
    const std::string where = c.source.empty() ? "launcher flags" : c.source;
    if (c.compute_environment != "LOCAL_MACHINE")
        config_error(where + ": compute_environment: ftlaunch runs on LOCAL_MACHINE only (got " + c.compute_environment + ")");
    switch (c.distributed_type) {
        case DistributedType::kNo:
        case DistributedType::kMultiCpu:
        case DistributedType::kMultiGpu:
        case DistributedType::kDeepSpeed:
        case DistributedType::kFsdp:
            break;
        default:
            config_error(where + ": distributed_type: ftlaunch runs NO, MULTI_CPU, MULTI_GPU, DEEPSPEED and FSDP "
                                 "(mapped onto ZeRO) (got " + to_string(c.distributed_type) + ")");
    }
    if (!c.num_processes || *c.num_processes == -1)
        config_error(where + ": num_processes: You need to manually pass in `--num_processes` using this config yaml.");
    if (*c.num_processes < 1) config_error(where + ": num_processes: must be at least 1 (got " + std::to_string(*c.num_processes) + ")");
    if (*c.num_processes % c.num_machines != 0)
        config_error(where + ": num_processes: " + std::to_string(*c.num_processes) +
                     " processes cannot be split evenly over num_machines " + std::to_string(c.num_machines) +
                     " machines; num_processes must be a multiple of num_machines");
    if (c.machine_rank >= c.num_machines)
        config_error(where + ": machine_rank: must be below num_machines " + std::to_string(c.num_machines) +
                     " (got " + std::to_string(c.machine_rank) + ")");
    if (c.distributed_type == DistributedType::kNo && *c.num_processes > 1)
        config_error(where + ": num_processes: distributed_type NO runs a single process (got " +
                     std::to_string(*c.num_processes) + "); use MULTI_GPU, MULTI_CPU or DEEPSPEED for several");
    if (c.num_machines > 1 && !c.main_process_ip)
        config_error(where + ": main_process_ip: required with num_machines > 1 (the address of machine_rank 0)");
    if (c.rdzv_backend != "static" && c.rdzv_backend != "c10d")
        config_error(where + ": rdzv_backend: ftlaunch supports static and c10d (both rendezvous on "
                             "main_process_ip:main_process_port) (got " + c.rdzv_backend + ")");
}

// The accelerate keys a deepspeed_config_file makes meaningless (accelerate raises on them).
void check_config_file_exclusive(const AccelerateConfig& c) {
    const auto& ds = c.deepspeed;
    std::vector<std::string> clashing;
    for (const char* key : {"gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                            "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
                            "zero3_save_16bit_model"})
        if (std::find(ds.keys_in_file.begin(), ds.keys_in_file.end(), key) != ds.keys_in_file.end())
            clashing.push_back(key);
    if (c.mixed_precision_from_file) clashing.push_back("mixed_precision");
    if (!clashing.empty())
        config_error(c.source + ": When using `deepspeed_config_file`, the following accelerate config variables "
                                "will be ignored: [" + join(clashing, ", ") +
                     "].\nPlease specify them appropriately in the DeepSpeed config file.\nIf you are using an "
                     "accelerate config file, remove others config variables mentioned in the above specified list.");
}

// FSDP configs run on the ZeRO engine: the sharding strategy picks the stage.
AccelerateDeepSpeedSection fsdp_as_zero(const AccelerateConfig& c, std::vector<std::string>& warnings) {
    const auto& f = c.fsdp_config;
    std::string strategy = "FULL_SHARD";
    if (f.contains("fsdp_sharding_strategy") && f["fsdp_sharding_strategy"].is_string())
        strategy = f["fsdp_sharding_strategy"].get<std::string>();
    if (f.contains("fsdp_reshard_after_forward") && f["fsdp_reshard_after_forward"].is_boolean())
        strategy = f["fsdp_reshard_after_forward"].get<bool>() ? "FULL_SHARD" : "SHARD_GRAD_OP";
    AccelerateDeepSpeedSection s;
    if (strategy == "FULL_SHARD" || strategy == "HYBRID_SHARD" || strategy == "1") s.zero_stage = 3;
    else if (strategy == "SHARD_GRAD_OP" || strategy == "HYBRID_SHARD_ZERO2" || strategy == "2") s.zero_stage = 2;
    else if (strategy == "NO_SHARD" || strategy == "3") s.zero_stage = 0;
    else config_error(c.source + ": fsdp_config.fsdp_sharding_strategy: must be one of FULL_SHARD, SHARD_GRAD_OP, "
                                 "NO_SHARD, HYBRID_SHARD, HYBRID_SHARD_ZERO2 (got " + strategy + ")");
    const bool offload = f.contains("fsdp_offload_params") && f["fsdp_offload_params"] == true;
    if (offload) {
        s.offload_param_device = *s.zero_stage == 3 ? OffloadDevice::kCpu : OffloadDevice::kNone;
        s.offload_optimizer_device = OffloadDevice::kCpu;
    }
    s.zero3_save_16bit_model = true;
    warnings.push_back("distributed_type FSDP runs on ftlaunch's ZeRO engine: " + strategy + " -> ZeRO stage " +
                       std::to_string(*s.zero_stage) + (offload ? ", fsdp_offload_params -> CPU offload" : ""));
    return s;
}

MixedPrecision effective_precision(const AccelerateConfig& c, const TrainArgs& a, std::vector<std::string>& warnings) {
    if (a.job == JobKind::kSeq2seqExample) return c.mixed_precision.value_or(MixedPrecision::kNo);
    // The HF Trainer's own --bf16/--fp16 decide, as TrainingArguments overrides accelerate's env.
    const MixedPrecision from_args = a.fp16 ? MixedPrecision::kFp16 : a.bf16 ? MixedPrecision::kBf16 : MixedPrecision::kNo;
    if (c.mixed_precision && *c.mixed_precision != from_args && *c.mixed_precision != MixedPrecision::kFp8)
        warnings.push_back("mixed_precision " + to_string(*c.mixed_precision) + " from the launch config is overridden by "
                           "the training flags (--bf16 " + (a.bf16 ? "True" : "False") + ", --fp16 " +
                           (a.fp16 ? "True" : "False") + "), as the HF Trainer does");
    return from_args;
}

}  // namespace

ResolvedAccelerate resolve_accelerate_config(const LauncherFlags& flags) {
    ResolvedAccelerate out;
    std::string path = flags.config_file.value_or("");
    if (path.empty() && std::filesystem::exists(default_accelerate_config_path()))
        path = default_accelerate_config_path();
    if (!path.empty()) {
        auto parsed = load_accelerate_config(path);
        out.config = std::move(parsed.config);
        out.warnings = std::move(parsed.warnings);
    } else {
        out.config.distributed_type = DistributedType::kNo;
        out.config.num_processes = 1;
        if (!flags.num_processes && !flags.use_deepspeed && !flags.multi_gpu)
            out.warnings.push_back("no --config_file and no " + default_accelerate_config_path() +
                                   ": running 1 process (distributed_type NO); write a config with `ftlaunch config`");
    }
    if (flags.num_processes && *flags.num_processes > 1 && out.config.distributed_type == DistributedType::kNo) {
        // accelerate switches to multi-process data parallel when asked for several processes.
        out.config.distributed_type = flags.use_cpu.value_or(out.config.use_cpu) ? DistributedType::kMultiCpu
                                                                                  : DistributedType::kMultiGpu;
    }
    apply_flags(flags, out.config);
    if (out.config.distributed_type == DistributedType::kMultiCpu) out.config.use_cpu = true;
    validate_topology(out.config);
    return out;
}

RunConfig resolve_run_config(const LauncherFlags& flags, const std::string& job_token,
                             const std::vector<std::string>& job_argv) {
    RunConfig run;
    auto accel = resolve_accelerate_config(flags);
    run.accelerate = std::move(accel.config);
    run.warnings = std::move(accel.warnings);
    run.job_token = job_token;
    run.job_argv = job_argv;
    auto job = job_for_script(job_token);
    if (!job)
        ftl::fail(ErrorKind::kUsage, "'" + job_token + "' is not a job ftlaunch runs; give one of " +
                                         join(known_job_tokens(), ", ") +
                                         " (ftlaunch runs its built-in jobs natively, not Python scripts)");
    auto parsed = parse_train_args(*job, job_argv);
    run.train = std::move(parsed.args);
    // transformers' TensorBoardCallback takes its folder from the environment.
    if (const char* tb = std::getenv("TENSORBOARD_LOGGING_DIR"); tb && *tb && run.train.logging_dir.empty())
        run.train.logging_dir = tb;
    run.warnings.insert(run.warnings.end(), parsed.warnings.begin(), parsed.warnings.end());

    const AccelerateConfig& c = run.accelerate;
    run.world_size = *c.num_processes;
    run.processes_per_machine = *c.num_processes / c.num_machines;
    run.mixed_precision = effective_precision(c, run.train, run.warnings);

    // The DeepSpeed config: from a JSON file, from the YAML keys, from FSDP keys, or plain DP.
    const std::string json_file = !run.train.deepspeed.empty() ? run.train.deepspeed
                                                               : c.deepspeed.deepspeed_config_file.value_or("");
    if (!run.train.deepspeed.empty() && c.deepspeed.deepspeed_config_file &&
        *c.deepspeed.deepspeed_config_file != run.train.deepspeed)
        config_error(c.source + ": deepspeed_config.deepspeed_config_file is " + *c.deepspeed.deepspeed_config_file +
                     " but --deepspeed names " + run.train.deepspeed + "; give one DeepSpeed config");
    const std::string where = c.source.empty() ? "launcher flags" : c.source;
    BuiltDeepSpeedConfig built;
    if (c.distributed_type == DistributedType::kDeepSpeed || !run.train.deepspeed.empty()) {
        run.uses_deepspeed = true;
        if (!json_file.empty()) {
            if (c.deepspeed.deepspeed_config_file) check_config_file_exclusive(c);
            built = load_deepspeed_json(json_file);
        } else {
            built = deepspeed_config_from_accelerate(c.deepspeed, where);
        }
    } else if (c.distributed_type == DistributedType::kFsdp) {
        run.uses_deepspeed = true;
        built = deepspeed_config_from_accelerate(fsdp_as_zero(c, run.warnings), where);
    } else {
        AccelerateDeepSpeedSection plain_data_parallel;
        plain_data_parallel.zero_stage = 0;
        built = deepspeed_config_from_accelerate(plain_data_parallel, where);
    }
    run.deepspeed = std::move(built.config);
    run.warnings.insert(run.warnings.end(), built.warnings.begin(), built.warnings.end());
    apply_mixed_precision(run.deepspeed, run.mixed_precision);
    resolve_with_train_args(run.deepspeed, run.train, run.world_size);
    const std::string& dtype = run.train.torch_dtype;
    if (!run.train.use_peft_lora && (dtype == "bfloat16" || dtype == "float16"))
        run.warnings.push_back("--torch_dtype " + dtype + ": full fine-tuning keeps float32 weights (the optimizer's "
                               "master copy, as DeepSpeed's engines keep it); use --bf16/--fp16 for " + dtype +
                               " compute; the weights are not trained in " + dtype);
    return run;
}

std::string frozen_base_dtype(const RunConfig& run, const std::string& checkpoint_dtype) {
    const bool sixteen_bit = run.mixed_precision == MixedPrecision::kBf16 || run.mixed_precision == MixedPrecision::kFp16;
    if (run.uses_deepspeed && sixteen_bit) return run.mixed_precision == MixedPrecision::kBf16 ? "bfloat16" : "float16";
    const TrainArgs& a = run.train;
    if (a.torch_dtype == "auto") return checkpoint_dtype.empty() ? "float32" : checkpoint_dtype;
    if (!a.torch_dtype.empty()) return a.torch_dtype;
    if (a.use_4bit_quantization && a.bnb_4bit_quant_storage_dtype != "uint8") return a.bnb_4bit_quant_storage_dtype;
    return "float32";
}

nlohmann::json RunConfig::to_json() const {
    return {
        {"accelerate_config", accelerate.to_json()},
        {"uses_deepspeed", uses_deepspeed},
        {"deepspeed_config", deepspeed.to_json()},
        {"mixed_precision", to_string(mixed_precision)},
        {"job", {{"token", job_token}, {"kind", to_string(train.job)}, {"argv", job_argv}}},
        {"train_args", train.to_json()},
        {"world_size", world_size},
        {"processes_per_machine", processes_per_machine},
        {"warnings", warnings},
    };
}

}  // namespace ftl::config
