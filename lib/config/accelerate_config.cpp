#include "config/accelerate_config.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>

#include "config/yaml_reader.h"
#include "util/files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

namespace {

template <typename Enum>
struct EnumNames {
    std::vector<std::pair<Enum, std::string>> names;
    std::string to_string(Enum v) const {
        for (const auto& [e, n] : names)
            if (e == v) return n;
        return "?";
    }
    std::optional<Enum> parse(const std::string& s, bool case_insensitive) const {
        for (const auto& [e, n] : names)
            if (n == s || (case_insensitive && to_lower(n) == to_lower(s))) return e;
        return std::nullopt;
    }
    std::vector<std::string> all() const {
        std::vector<std::string> out;
        for (const auto& [e, n] : names) out.push_back(n);
        return out;
    }
};

const EnumNames<DistributedType> kDistributedTypes{{
    {DistributedType::kNo, "NO"}, {DistributedType::kMultiCpu, "MULTI_CPU"},
    {DistributedType::kMultiGpu, "MULTI_GPU"}, {DistributedType::kMultiNpu, "MULTI_NPU"},
    {DistributedType::kMultiMlu, "MULTI_MLU"}, {DistributedType::kMultiSdaa, "MULTI_SDAA"},
    {DistributedType::kMultiMusa, "MULTI_MUSA"}, {DistributedType::kMultiXpu, "MULTI_XPU"},
    {DistributedType::kMultiHpu, "MULTI_HPU"}, {DistributedType::kMultiNeuron, "MULTI_NEURON"},
    {DistributedType::kDeepSpeed, "DEEPSPEED"}, {DistributedType::kFsdp, "FSDP"},
    {DistributedType::kXla, "XLA"}, {DistributedType::kMegatronLm, "MEGATRON_LM"},
}};
const EnumNames<MixedPrecision> kMixedPrecisions{{
    {MixedPrecision::kNo, "no"}, {MixedPrecision::kFp16, "fp16"},
    {MixedPrecision::kBf16, "bf16"}, {MixedPrecision::kFp8, "fp8"},
}};
const EnumNames<OffloadDevice> kOffloadDevices{{
    {OffloadDevice::kNone, "none"}, {OffloadDevice::kCpu, "cpu"}, {OffloadDevice::kNvme, "nvme"},
}};
const EnumNames<MultinodeLauncher> kLaunchers{{
    {MultinodeLauncher::kPdsh, "pdsh"}, {MultinodeLauncher::kStandard, "standard"},
    {MultinodeLauncher::kOpenmpi, "openmpi"}, {MultinodeLauncher::kMvapich, "mvapich"},
    {MultinodeLauncher::kMpich, "mpich"}, {MultinodeLauncher::kNossh, "nossh"},
    {MultinodeLauncher::kSlurm, "slurm"},
}};

const std::vector<std::string> kTopLevelKeys = {
    "compute_environment", "debug", "distributed_type", "mixed_precision", "use_cpu",
    "num_processes", "machine_rank", "num_machines", "gpu_ids", "main_process_ip",
    "main_process_port", "rdzv_backend", "same_network", "main_training_function",
    "enable_cpu_affinity", "downcast_bf16", "deepspeed_config", "fsdp_config",
    "megatron_lm_config", "dynamo_config", "fp8_config", "mpirun_config", "parallelism_config",
    "ipex_config", "tpu_name", "tpu_zone", "tpu_use_cluster", "tpu_use_sudo",
    "command_file", "commands", "tpu_vm", "tpu_env",
    // legacy keys accelerate converts on load
    "fp16", "dynamo_backend",
};
const std::vector<std::string> kDeepSpeedKeys = {
    "deepspeed_config_file", "deepspeed_hostfile", "deepspeed_exclusion_filter",
    "deepspeed_inclusion_filter", "deepspeed_multinode_launcher", "zero_stage",
    "gradient_accumulation_steps", "gradient_clipping", "offload_optimizer_device",
    "offload_param_device", "offload_optimizer_nvme_path", "offload_param_nvme_path",
    "zero3_init_flag", "zero3_save_16bit_model", "deepspeed_moe_layer_cls_names",
};

void parse_deepspeed_section(const YamlReader& r, const YAML::Node& node,
                             AccelerateDeepSpeedSection& ds, std::vector<std::string>& warnings) {
    if (node.IsNull()) return;
    if (!node.IsMap()) r.fail(node, "deepspeed_config", "must be a mapping of key: value");
    for (const auto& item : node) {
        const std::string key = item.first.Scalar();
        const std::string dotted = "deepspeed_config." + key;
        const YAML::Node& v = item.second;
        ds.keys_in_file.push_back(key);
        if (key == "deepspeed_config_file") ds.deepspeed_config_file = r.as_string(v, dotted);
        else if (key == "deepspeed_hostfile") ds.deepspeed_hostfile = r.as_string(v, dotted);
        else if (key == "deepspeed_exclusion_filter") ds.deepspeed_exclusion_filter = r.as_string(v, dotted);
        else if (key == "deepspeed_inclusion_filter") ds.deepspeed_inclusion_filter = r.as_string(v, dotted);
        else if (key == "deepspeed_multinode_launcher")
            ds.deepspeed_multinode_launcher = r.as_enum<MultinodeLauncher>(
                v, dotted, parse_multinode_launcher, allowed_multinode_launchers());
        else if (key == "zero_stage") ds.zero_stage = r.as_int(v, dotted, 0, 3);
        else if (key == "gradient_accumulation_steps")
            ds.gradient_accumulation_steps = r.as_int(v, dotted, 1, 1 << 30);
        else if (key == "gradient_clipping") ds.gradient_clipping = r.as_double(v, dotted, 0.0);
        else if (key == "offload_optimizer_device")
            ds.offload_optimizer_device =
                r.as_enum<OffloadDevice>(v, dotted, parse_offload_device, allowed_offload_devices());
        else if (key == "offload_param_device")
            ds.offload_param_device =
                r.as_enum<OffloadDevice>(v, dotted, parse_offload_device, allowed_offload_devices());
        else if (key == "offload_optimizer_nvme_path") ds.offload_optimizer_nvme_path = r.as_string(v, dotted);
        else if (key == "offload_param_nvme_path") ds.offload_param_nvme_path = r.as_string(v, dotted);
        else if (key == "zero3_init_flag") ds.zero3_init_flag = r.as_bool(v, dotted);
        else if (key == "zero3_save_16bit_model") ds.zero3_save_16bit_model = r.as_bool(v, dotted);
        else if (key == "deepspeed_moe_layer_cls_names") ds.deepspeed_moe_layer_cls_names = r.as_string(v, dotted);
        else {
            ds.keys_in_file.pop_back();
            warnings.push_back(r.location(item.first) + ": unknown key " + dotted + " ignored" +
                               did_you_mean(key, kDeepSpeedKeys));
        }
    }
}

// accelerate writes downcast_bf16 as the string 'no'; a bool is accepted too. Either must read
// as a boolean; the spelling is kept.
nlohmann::json parse_downcast_bf16(const YamlReader& r, const YAML::Node& v) {
    r.as_bool(v, "downcast_bf16");
    return yaml_to_json(v);
}

}  // namespace

std::string to_string(DistributedType v) { return kDistributedTypes.to_string(v); }
std::string to_string(MixedPrecision v) { return kMixedPrecisions.to_string(v); }
std::string to_string(OffloadDevice v) { return kOffloadDevices.to_string(v); }
std::string to_string(MultinodeLauncher v) { return kLaunchers.to_string(v); }
std::optional<DistributedType> parse_distributed_type(const std::string& s) {
    return kDistributedTypes.parse(s, true);
}
std::optional<MixedPrecision> parse_mixed_precision(const std::string& s) {
    return kMixedPrecisions.parse(s, true);
}
std::optional<OffloadDevice> parse_offload_device(const std::string& s) {
    return kOffloadDevices.parse(s, true);
}
std::optional<MultinodeLauncher> parse_multinode_launcher(const std::string& s) {
    return kLaunchers.parse(s, true);
}
std::vector<std::string> allowed_distributed_types() { return kDistributedTypes.all(); }
std::vector<std::string> allowed_mixed_precisions() { return kMixedPrecisions.all(); }
std::vector<std::string> allowed_offload_devices() { return kOffloadDevices.all(); }
std::vector<std::string> allowed_multinode_launchers() { return kLaunchers.all(); }

ParsedAccelerateConfig parse_accelerate_config(const std::string& text, const std::string& source) {
    YamlReader r(source);
    const YAML::Node root = r.load_text(text);
    ParsedAccelerateConfig out;
    AccelerateConfig& c = out.config;
    c.source = source;
    if (root.IsNull()) ftl::fail(ErrorKind::kConfig, source + ": the file is empty; it needs at least distributed_type");
    if (!root.IsMap()) r.fail(root, "(top level)", "must be a mapping of key: value");

    bool has_distributed_type = false;
    std::optional<bool> legacy_fp16;
    for (const auto& item : root) {
        const std::string key = item.first.Scalar();
        const YAML::Node& v = item.second;
        if (key == "compute_environment") {
            c.compute_environment = r.as_string(v, key);
            if (c.compute_environment != "LOCAL_MACHINE" && c.compute_environment != "AMAZON_SAGEMAKER")
                r.fail(v, key, "must be one of LOCAL_MACHINE, AMAZON_SAGEMAKER (got '" + c.compute_environment + "')");
        } else if (key == "distributed_type") {
            c.distributed_type = r.as_enum<DistributedType>(v, key, parse_distributed_type,
                                                            allowed_distributed_types());
            has_distributed_type = true;
        } else if (key == "mixed_precision") {
            if (!v.IsNull()) {
                c.mixed_precision = r.as_enum<MixedPrecision>(v, key, parse_mixed_precision,
                                                              allowed_mixed_precisions());
                c.mixed_precision_from_file = true;
            }
        } else if (key == "use_cpu") c.use_cpu = r.as_bool(v, key);
        else if (key == "debug") c.debug = r.as_bool(v, key);
        else if (key == "enable_cpu_affinity") c.enable_cpu_affinity = r.as_bool(v, key);
        else if (key == "num_processes") c.num_processes = r.as_int(v, key, -1, 1 << 20);
        else if (key == "num_machines") c.num_machines = r.as_int(v, key, 1, 1 << 20);
        else if (key == "machine_rank") c.machine_rank = r.as_int(v, key, 0, 1 << 20);
        else if (key == "gpu_ids") { if (!v.IsNull()) c.gpu_ids = r.as_string(v, key); }
        else if (key == "main_process_ip") { if (!v.IsNull()) c.main_process_ip = r.as_string(v, key); }
        else if (key == "main_process_port") { if (!v.IsNull()) c.main_process_port = r.as_int(v, key, 0, 65535); }
        else if (key == "rdzv_backend") c.rdzv_backend = r.as_string(v, key);
        else if (key == "same_network") c.same_network = r.as_bool(v, key);
        else if (key == "main_training_function") c.main_training_function = r.as_string(v, key);
        else if (key == "downcast_bf16") c.downcast_bf16 = parse_downcast_bf16(r, v);
        else if (key == "deepspeed_config") parse_deepspeed_section(r, v, c.deepspeed, out.warnings);
        else if (key == "fsdp_config") c.fsdp_config = r.as_mapping_json(v, key);
        else if (key == "megatron_lm_config") c.megatron_lm_config = r.as_mapping_json(v, key);
        else if (key == "dynamo_config") c.dynamo_config = r.as_mapping_json(v, key);
        else if (key == "fp8_config") c.fp8_config = r.as_mapping_json(v, key);
        else if (key == "mpirun_config") c.mpirun_config = r.as_mapping_json(v, key);
        else if (key == "parallelism_config") c.parallelism_config = r.as_mapping_json(v, key);
        else if (key == "ipex_config") r.as_mapping_json(v, key);
        else if (key == "tpu_name") { if (!v.IsNull()) c.tpu_name = r.as_string(v, key); }
        else if (key == "tpu_zone") { if (!v.IsNull()) c.tpu_zone = r.as_string(v, key); }
        else if (key == "command_file") { if (!v.IsNull()) c.command_file = r.as_string(v, key); }
        else if (key == "tpu_vm") { if (!v.IsNull()) c.tpu_vm = r.as_string(v, key); }
        else if (key == "tpu_use_cluster") c.tpu_use_cluster = r.as_bool(v, key);
        else if (key == "tpu_use_sudo") c.tpu_use_sudo = r.as_bool(v, key);
        else if (key == "commands") c.commands = r.as_string_list(v, key);
        else if (key == "tpu_env") c.tpu_env = r.as_string_list(v, key);
        else if (key == "fp16") legacy_fp16 = r.as_bool(v, key);
        else if (key == "dynamo_backend") {
            // Legacy key: accelerate turns it into dynamo_config ({} for "NO").
            const std::string backend = r.as_string(v, key);
            c.dynamo_config = nlohmann::json::object();
            if (to_lower(backend) != "no") c.dynamo_config["dynamo_backend"] = backend;
        } else {
            out.warnings.push_back(r.location(item.first) + ": unknown key " + key + " ignored" +
                                   did_you_mean(key, kTopLevelKeys));
        }
    }
    if (!has_distributed_type)
        ftl::fail(ErrorKind::kConfig, source + ": distributed_type: missing; it must be one of " +
                                          join(allowed_distributed_types(), ", ") +
                                          " (accelerate requires it too)");
    if (legacy_fp16 && !c.mixed_precision) {
        c.mixed_precision = *legacy_fp16 ? MixedPrecision::kFp16 : MixedPrecision::kNo;
        c.mixed_precision_from_file = true;
        out.warnings.push_back(source + ": legacy key fp16 read as mixed_precision: " +
                               to_string(*c.mixed_precision));
    }
    if (!c.num_processes && c.distributed_type == DistributedType::kNo) c.num_processes = 1;
    return out;
}

ParsedAccelerateConfig load_accelerate_config(const std::string& path) {
    const auto text = read_text_file(path);
    if (!text)
        ftl::fail(ErrorKind::kConfig,
                  "The passed configuration file `" + path +
                      "` does not exist. Pass an existing file to --config_file, or write one with "
                      "`ftlaunch config --config_file " + path + "`.");
    return parse_accelerate_config(*text, path);
}

std::string default_accelerate_config_path() {
    if (const char* hf_home = std::getenv("HF_HOME"); hf_home && *hf_home)
        return std::string(hf_home) + "/accelerate/default_config.yaml";
    std::string cache;
    if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) cache = xdg;
    else if (const char* home = std::getenv("HOME"); home && *home) cache = std::string(home) + "/.cache";
    else cache = ".cache";
    return cache + "/huggingface/accelerate/default_config.yaml";
}

nlohmann::json AccelerateConfig::to_json() const {
    nlohmann::json j;
    j["compute_environment"] = compute_environment;
    j["debug"] = debug;
    j["distributed_type"] = to_string(distributed_type);
    if (mixed_precision) j["mixed_precision"] = to_string(*mixed_precision);
    j["use_cpu"] = use_cpu;
    j["enable_cpu_affinity"] = enable_cpu_affinity;
    if (num_processes) j["num_processes"] = *num_processes;
    j["num_machines"] = num_machines;
    j["machine_rank"] = machine_rank;
    if (gpu_ids) j["gpu_ids"] = *gpu_ids;
    if (main_process_ip) j["main_process_ip"] = *main_process_ip;
    if (main_process_port) j["main_process_port"] = *main_process_port;
    j["rdzv_backend"] = rdzv_backend;
    j["same_network"] = same_network;
    j["main_training_function"] = main_training_function;
    j["downcast_bf16"] = downcast_bf16;
    nlohmann::json ds = nlohmann::json::object();
    const auto& d = deepspeed;
    if (d.deepspeed_config_file) ds["deepspeed_config_file"] = *d.deepspeed_config_file;
    if (d.deepspeed_hostfile) ds["deepspeed_hostfile"] = *d.deepspeed_hostfile;
    if (d.deepspeed_exclusion_filter) ds["deepspeed_exclusion_filter"] = *d.deepspeed_exclusion_filter;
    if (d.deepspeed_inclusion_filter) ds["deepspeed_inclusion_filter"] = *d.deepspeed_inclusion_filter;
    if (d.deepspeed_multinode_launcher) ds["deepspeed_multinode_launcher"] = to_string(*d.deepspeed_multinode_launcher);
    if (d.zero_stage) ds["zero_stage"] = *d.zero_stage;
    if (d.gradient_accumulation_steps) ds["gradient_accumulation_steps"] = *d.gradient_accumulation_steps;
    if (d.gradient_clipping) ds["gradient_clipping"] = *d.gradient_clipping;
    if (d.offload_optimizer_device) ds["offload_optimizer_device"] = to_string(*d.offload_optimizer_device);
    if (d.offload_param_device) ds["offload_param_device"] = to_string(*d.offload_param_device);
    if (d.offload_optimizer_nvme_path) ds["offload_optimizer_nvme_path"] = *d.offload_optimizer_nvme_path;
    if (d.offload_param_nvme_path) ds["offload_param_nvme_path"] = *d.offload_param_nvme_path;
    if (d.zero3_init_flag) ds["zero3_init_flag"] = *d.zero3_init_flag;
    if (d.zero3_save_16bit_model) ds["zero3_save_16bit_model"] = *d.zero3_save_16bit_model;
    if (d.deepspeed_moe_layer_cls_names) ds["deepspeed_moe_layer_cls_names"] = *d.deepspeed_moe_layer_cls_names;
    if (!ds.empty()) j["deepspeed_config"] = ds;
    if (!fsdp_config.empty()) j["fsdp_config"] = fsdp_config;
    if (!megatron_lm_config.empty()) j["megatron_lm_config"] = megatron_lm_config;
    if (!dynamo_config.empty()) j["dynamo_config"] = dynamo_config;
    if (!fp8_config.empty()) j["fp8_config"] = fp8_config;
    if (!mpirun_config.empty()) j["mpirun_config"] = mpirun_config;
    if (!parallelism_config.empty()) j["parallelism_config"] = parallelism_config;
    if (tpu_name) j["tpu_name"] = *tpu_name;
    if (tpu_zone) j["tpu_zone"] = *tpu_zone;
    if (command_file) j["command_file"] = *command_file;
    if (tpu_vm) j["tpu_vm"] = *tpu_vm;
    j["tpu_use_cluster"] = tpu_use_cluster;
    j["tpu_use_sudo"] = tpu_use_sudo;
    if (!commands.empty()) j["commands"] = commands;
    j["tpu_env"] = tpu_env;
    return j;
}

std::string to_yaml(const AccelerateConfig& config) {
    // nlohmann::json objects iterate in sorted key order, as yaml.safe_dump writes them.
    YAML::Emitter out;
    out.SetNullFormat(YAML::LowerNull);  // `null`, as yaml.safe_dump writes None
    std::function<void(const nlohmann::json&)> emit = [&](const nlohmann::json& j) {
        if (j.is_object()) {
            out << YAML::BeginMap;
            for (auto it = j.begin(); it != j.end(); ++it) {
                out << YAML::Key << it.key() << YAML::Value;
                emit(it.value());
            }
            out << YAML::EndMap;
        } else if (j.is_array()) {
            out << YAML::Flow << YAML::BeginSeq;
            for (const auto& item : j) emit(item);
            out << YAML::EndSeq;
        } else if (j.is_boolean()) {
            out << (j.get<bool>() ? "true" : "false");
        } else if (j.is_string()) {
            const std::string s = j.get<std::string>();
            // Quote strings YAML would read as something else ('no' would become false), and write
            // control characters as escapes (a plain or single-quoted scalar loses line breaks).
            const bool control = std::any_of(s.begin(), s.end(), [](char c) {
                return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
            });
            if (control) out << YAML::DoubleQuoted << s;
            else if (parse_bool(s) || parse_double(s) || s.empty()) out << YAML::SingleQuoted << s;
            else out << s;
        } else if (j.is_null()) {
            out << YAML::Null;  // a dumped "null" would be emitted quoted, as a string
        } else {
            out << j.dump();
        }
    };
    emit(config.to_json());
    return std::string(out.c_str()) + "\n";
}

}  // namespace ftl::config
