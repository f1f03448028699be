#include "config/deepspeed_config.h"

#include <cmath>

#include "config/deepspeed_sections.h"
#include "config/json_reader.h"
#include "util/files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

namespace {

using nlohmann::json;

// DeepSpeed's offload tuning keys that ftlaunch reads but does not apply: the numbers do not
// depend on them, only where and how the swap buffers its data; the warning says what ftlaunch
// does instead.
void not_applied(const std::string& key, const json& value, const char* instead, std::vector<std::string>& warnings) {
    warnings.push_back(key + " " + value.dump() + ": read but not applied (" + instead + "); results do not depend on it");
}

void read_offload_optimizer(const JsonReader& r, const json& j, OffloadOptimizerConfig& o,
                            std::vector<std::string>& warnings) {
    static const std::vector<std::string> known = {"device", "nvme_path", "pin_memory", "buffer_count",
                                                   "fast_init", "ratio"};
    const std::string base = "zero_optimization.offload_optimizer.";
    for (auto it = r.object(j, "zero_optimization.offload_optimizer").begin(); it != j.end(); ++it) {
        const std::string key = base + it.key();
        if (it.key() == "device") o.device = r.device(it.value(), key);
        else if (it.key() == "nvme_path") o.nvme_path = r.string(it.value(), key);
        else if (it.key() == "pin_memory") o.pin_memory = r.boolean(it.value(), key);
        else if (it.key() == "buffer_count") {
            o.buffer_count = static_cast<int>(r.integer(it.value(), key, 1));
            not_applied(key, it.value(), "the NVMe swap keeps two sub-group buffers: one read ahead, one written behind", warnings);
        } else if (it.key() == "fast_init") {
            o.fast_init = r.boolean(it.value(), key);
        } else if (it.key() == "ratio") {
            if (r.number(it.value(), key, 0.0) != 1.0)
                not_applied(key, it.value(), "the whole optimizer state is offloaded", warnings);
        } else {
            r.unknown(key, it.key(), known, warnings);
        }
    }
}

void read_offload_param(const JsonReader& r, const json& j, OffloadParamConfig& o,
                        std::vector<std::string>& warnings) {
    static const std::vector<std::string> known = {"device", "nvme_path", "pin_memory", "buffer_count",
                                                   "buffer_size", "max_in_cpu"};
    const std::string base = "zero_optimization.offload_param.";
    for (auto it = r.object(j, "zero_optimization.offload_param").begin(); it != j.end(); ++it) {
        const std::string key = base + it.key();
        if (it.key() == "device") o.device = r.device(it.value(), key);
        else if (it.key() == "nvme_path") o.nvme_path = r.string(it.value(), key);
        else if (it.key() == "pin_memory") o.pin_memory = r.boolean(it.value(), key);
        else if (it.key() == "buffer_count" || it.key() == "buffer_size") {
            if (it.key() == "buffer_count") o.buffer_count = static_cast<int>(r.integer(it.value(), key, 1));
            else o.buffer_size = r.integer(it.value(), key, 1);
            not_applied(key, it.value(), "the parameter swap reads the next part ahead into a buffer of that part's size", warnings);
        } else if (it.key() == "max_in_cpu") {
            o.max_in_cpu = r.integer(it.value(), key, 0);
        } else {
            r.unknown(key, it.key(), known, warnings);
        }
    }
}

void read_zero(const JsonReader& r, const json& j, ZeroOptimizationConfig& z, std::vector<std::string>& warnings) {
    static const std::vector<std::string> known = {
        "stage", "offload_optimizer", "offload_param", "overlap_comm", "contiguous_gradients",
        "reduce_scatter", "allgather_partitions", "round_robin_gradients", "allgather_bucket_size",
        "reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
        "stage3_max_live_parameters", "stage3_max_reuse_distance", "sub_group_size",
        "stage3_gather_16bit_weights_on_model_save", "stage3_gather_fp16_weights_on_model_save",
        "cpu_offload", "elastic_checkpoint", "ignore_unused_parameters", "load_from_fp32_weights"};
    for (auto it = r.object(j, "zero_optimization").begin(); it != j.end(); ++it) {
        const std::string key = "zero_optimization." + it.key();
        const json& v = it.value();
        const std::string& k = it.key();
        if (k == "stage") {
            z.stage = static_cast<int>(r.integer(v, key, 0));
            if (z.stage > 3) r.fail(key, "must be one of 0, 1, 2, 3 (got " + v.dump() + ")");
        } else if (k == "offload_optimizer") read_offload_optimizer(r, v, z.offload_optimizer, warnings);
        else if (k == "offload_param") read_offload_param(r, v, z.offload_param, warnings);
        else if (k == "overlap_comm") z.overlap_comm = r.boolean(v, key);
        else if (k == "contiguous_gradients") z.contiguous_gradients = r.boolean(v, key);
        else if (k == "reduce_scatter") z.reduce_scatter = r.boolean(v, key);
        else if (k == "allgather_partitions") z.allgather_partitions = r.boolean(v, key);
        else if (k == "round_robin_gradients") z.round_robin_gradients = r.boolean(v, key);
        else if (k == "allgather_bucket_size") z.allgather_bucket_size = r.integer(v, key, 1);
        else if (k == "reduce_bucket_size") z.reduce_bucket_size = r.auto_integer(v, key, 1);
        else if (k == "stage3_prefetch_bucket_size") z.stage3_prefetch_bucket_size = r.auto_integer(v, key, 0);
        else if (k == "stage3_param_persistence_threshold")
            z.stage3_param_persistence_threshold = r.auto_integer(v, key, 0);
        else if (k == "stage3_max_live_parameters") z.stage3_max_live_parameters = r.integer(v, key, 0);
        else if (k == "stage3_max_reuse_distance") z.stage3_max_reuse_distance = r.integer(v, key, 0);
        else if (k == "sub_group_size") z.sub_group_size = r.integer(v, key, 1);
        else if (k == "stage3_gather_16bit_weights_on_model_save" ||
                 k == "stage3_gather_fp16_weights_on_model_save")
            z.stage3_gather_16bit_weights_on_model_save = r.auto_boolean(v, key).value_or(false);
        else if (k == "cpu_offload" || k == "elastic_checkpoint" || k == "ignore_unused_parameters" ||
                 k == "load_from_fp32_weights")
            r.boolean(v, key);
        else r.unknown(key, k, known, warnings);
    }
}

void read_fp16(const JsonReader& r, const json& j, DeepSpeedConfig& ds, std::vector<std::string>& warnings) {
    static const std::vector<std::string> known = {"enabled", "auto_cast", "loss_scale", "initial_scale_power",
                                                   "loss_scale_window", "hysteresis", "min_loss_scale",
                                                   "consecutive_hysteresis"};
    for (auto it = r.object(j, "fp16").begin(); it != j.end(); ++it) {
        const std::string key = "fp16." + it.key();
        const json& v = it.value();
        const std::string& k = it.key();
        if (k == "enabled") ds.fp16_enabled = r.auto_boolean(v, key);
        else if (k == "auto_cast") ds.fp16.auto_cast = r.auto_boolean(v, key).value_or(false);
        else if (k == "loss_scale") ds.fp16.loss_scale = r.number(v, key, 0.0);
        else if (k == "initial_scale_power") ds.fp16.initial_scale_power = static_cast<int>(r.integer(v, key, 0));
        else if (k == "loss_scale_window") ds.fp16.loss_scale_window = static_cast<int>(r.integer(v, key, 1));
        else if (k == "hysteresis") ds.fp16.hysteresis = static_cast<int>(r.integer(v, key, 1));
        else if (k == "min_loss_scale") ds.fp16.min_loss_scale = r.number(v, key, 0.0);
        else if (k == "consecutive_hysteresis") r.boolean(v, key);
        else r.unknown(key, k, known, warnings);
    }
}

void read_aio(const JsonReader& r, const json& j, AioConfig& aio, std::vector<std::string>& warnings) {
    static const std::vector<std::string> known = {"block_size", "queue_depth", "thread_count",
                                                   "single_submit", "overlap_events", "intra_op_parallelism"};
    for (auto it = r.object(j, "aio").begin(); it != j.end(); ++it) {
        const std::string key = "aio." + it.key();
        const json& v = it.value();
        const std::string& k = it.key();
        if (k == "block_size") aio.block_size = r.integer(v, key, 4096);
        else if (k == "queue_depth") aio.queue_depth = static_cast<int>(r.integer(v, key, 1));
        else if (k == "thread_count" || k == "intra_op_parallelism") aio.thread_count = static_cast<int>(r.integer(v, key, 1));
        else if (k == "single_submit") aio.single_submit = r.boolean(v, key);
        else if (k == "overlap_events") aio.overlap_events = r.boolean(v, key);
        else r.unknown(key, k, known, warnings);
    }
}

// Rules DeepSpeed and accelerate enforce on any config, YAML-built or from a file.
// `yaml` picks the key names the user wrote (accelerate YAML names vs DeepSpeed JSON names).
void validate(const DeepSpeedConfig& ds, bool yaml) {
    const auto& z = ds.zero_optimization;
    auto fail = [&](const std::string& message) { ftl::fail(ErrorKind::kConfig, ds.source + ": " + message); };
    const std::string stage_key = yaml ? "deepspeed_config.zero_stage" : "zero_optimization.stage";
    if (z.offload_param.device != OffloadDevice::kNone && z.stage != 3)
        fail(std::string(yaml ? "deepspeed_config.offload_param_device" : "zero_optimization.offload_param.device") +
             ": offloading parameters to " + to_string(z.offload_param.device) + " needs " + stage_key +
             " 3 (got " + std::to_string(z.stage) + ")");
    if (z.offload_optimizer.device != OffloadDevice::kNone && z.stage == 0)
        fail(std::string(yaml ? "deepspeed_config.offload_optimizer_device" : "zero_optimization.offload_optimizer.device") +
             ": offloading the optimizer to " + to_string(z.offload_optimizer.device) + " needs " + stage_key +
             " 1, 2 or 3 (got 0)");
    if (z.offload_param.device == OffloadDevice::kNvme && (z.offload_param.nvme_path.empty() || z.offload_param.nvme_path == "none"))
        fail(std::string(yaml ? "deepspeed_config.offload_param_nvme_path" : "zero_optimization.offload_param.nvme_path") +
             ": required when parameters are offloaded to nvme (a folder on a local NVMe drive)");
    if (z.offload_optimizer.device == OffloadDevice::kNvme &&
        (z.offload_optimizer.nvme_path.empty() || z.offload_optimizer.nvme_path == "none"))
        fail(std::string(yaml ? "deepspeed_config.offload_optimizer_nvme_path" : "zero_optimization.offload_optimizer.nvme_path") +
             ": required when the optimizer is offloaded to nvme (a folder on a local NVMe drive)");
}

}  // namespace

BuiltDeepSpeedConfig deepspeed_config_from_accelerate(const AccelerateDeepSpeedSection& s, const std::string& source) {
    BuiltDeepSpeedConfig out;
    DeepSpeedConfig& ds = out.config;
    ds.source = source;
    ds.gradient_accumulation_steps = s.gradient_accumulation_steps
                                         ? Auto<long long>(*s.gradient_accumulation_steps) : std::nullopt;
    ds.gradient_clipping = s.gradient_clipping;
    auto& z = ds.zero_optimization;
    z.stage = s.zero_stage.value_or(2);  // accelerate's default when the key is absent
    z.offload_optimizer.device = s.offload_optimizer_device.value_or(OffloadDevice::kNone);
    z.offload_param.device = s.offload_param_device.value_or(OffloadDevice::kNone);
    if (z.offload_optimizer.device == OffloadDevice::kNvme)
        z.offload_optimizer.nvme_path = s.offload_optimizer_nvme_path.value_or("");
    if (z.offload_param.device == OffloadDevice::kNvme)
        z.offload_param.nvme_path = s.offload_param_nvme_path.value_or("");
    z.stage3_gather_16bit_weights_on_model_save = s.zero3_save_16bit_model.value_or(false);
    ds.zero3_init_flag = s.zero3_init_flag.value_or(z.stage == 3);
    if (ds.zero3_init_flag && z.stage != 3) {
        out.warnings.push_back("DeepSpeed Zero3 Init flag is only applicable for ZeRO Stage 3. Setting it to False.");
        ds.zero3_init_flag = false;
    }
    validate(ds, true);
    return out;
}

BuiltDeepSpeedConfig parse_deepspeed_json(const std::string& text, const std::string& source) {
    json root;
    try {
        root = json::parse(text);
    } catch (const json::parse_error& e) {
        // Report the line of the byte offset nlohmann gives.
        const size_t offset = std::min(e.byte, text.size());
        const long line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(offset ? offset - 1 : 0), '\n');
        ftl::fail(ErrorKind::kConfig, source + ":" + std::to_string(line) + ": JSON syntax error: " + e.what());
    } catch (const json::out_of_range& e) {  // a number beyond double's range, e.g. 1e400
        ftl::fail(ErrorKind::kConfig, source + ": a number out of range: " + e.what());
    }
    JsonReader r(source);
    if (!root.is_object()) r.fail("(top level)", "must be a JSON object {...}");
    if (!root.contains("zero_optimization"))
        r.fail("zero_optimization", "missing: Please specify the ZeRO optimization config in the DeepSpeed config.");
    BuiltDeepSpeedConfig out;
    DeepSpeedConfig& ds = out.config;
    ds.source = source;
    ds.gradient_accumulation_steps = 1;  // accelerate: a missing key means 1
    static const std::vector<std::string> known = {
        "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
        "gradient_clipping", "zero_optimization", "bf16", "bfloat16", "fp16", "optimizer", "scheduler",
        "aio", "zero_allow_untested_optimizer", "communication_data_type", "steps_per_print",
        "wall_clock_breakdown", "zero_force_ds_cpu_optimizer", "prescale_gradients",
        "gradient_predivide_factor", "dump_state", "flops_profiler", "activation_checkpointing",
        "checkpoint", "data_types", "tensorboard", "wandb", "csv_monitor", "comms_logger"};
    for (auto it = root.begin(); it != root.end(); ++it) {
        const std::string& k = it.key();
        const json& v = it.value();
        if (k == "train_batch_size") ds.train_batch_size = r.auto_integer(v, k, 1);
        else if (k == "train_micro_batch_size_per_gpu") ds.train_micro_batch_size_per_gpu = r.auto_integer(v, k, 1);
        else if (k == "gradient_accumulation_steps") ds.gradient_accumulation_steps = r.auto_integer(v, k, 1);
        else if (k == "gradient_clipping") ds.gradient_clipping = JsonReader::is_auto(v) ? Auto<double>() : r.number(v, k, 0.0);
        else if (k == "zero_optimization") read_zero(r, v, ds.zero_optimization, out.warnings);
        else if (k == "bf16" || k == "bfloat16") {
            for (auto b = r.object(v, k).begin(); b != v.end(); ++b)
                if (b.key() == "enabled") ds.bf16_enabled = r.auto_boolean(b.value(), k + ".enabled");
        } else if (k == "fp16") read_fp16(r, v, ds, out.warnings);
        else if (k == "optimizer") ds.optimizer = read_optimizer_section(r, v);
        else if (k == "scheduler") ds.scheduler = read_scheduler_section(r, v);
        else if (k == "aio") read_aio(r, v, ds.aio, out.warnings);
        else if (k == "zero_allow_untested_optimizer") ds.zero_allow_untested_optimizer = r.boolean(v, k);
        else if (k == "communication_data_type") {
            ds.communication_data_type = r.string(v, k);
            if (!ds.communication_data_type.empty() && ds.communication_data_type != "fp32" &&
                ds.communication_data_type != "fp16" && ds.communication_data_type != "bf16")
                r.fail(k, "must be one of fp32, fp16, bf16 (got " + v.dump() + ")");
        } else if (std::find(known.begin(), known.end(), k) == known.end())
            r.unknown(k, k, known, out.warnings);
    }
    ds.zero3_init_flag = ds.zero_optimization.stage == 3;
    validate(ds, false);
    return out;
}

BuiltDeepSpeedConfig load_deepspeed_json(const std::string& path) {
    const auto text = read_text_file(path);
    if (!text) ftl::fail(ErrorKind::kConfig, path + ": DeepSpeed config file cannot be read (does it exist?)");
    return parse_deepspeed_json(*text, path);
}

void apply_mixed_precision(DeepSpeedConfig& ds, MixedPrecision mp) {
    const bool want_fp16 = mp == MixedPrecision::kFp16;
    const bool want_bf16 = mp == MixedPrecision::kBf16 || mp == MixedPrecision::kFp8;
    if (want_fp16 && ds.bf16_enabled.value_or(false))
        ftl::fail(ErrorKind::kConfig, ds.source + ": `--mixed_precision` arg cannot be set to `fp16` when `bf16` "
                                                  "is set in the DeepSpeed config file.");
    if (want_bf16 && ds.fp16_enabled.value_or(false))
        ftl::fail(ErrorKind::kConfig, ds.source + ": `--mixed_precision` arg cannot be set to `bf16` when `fp16` "
                                                  "is set in the DeepSpeed config file.");
    if (want_fp16) {
        ds.fp16_enabled = true;
        ds.fp16.auto_cast = true;
    }
    if (want_bf16) ds.bf16_enabled = true;
    if (!ds.fp16_enabled) ds.fp16_enabled = want_fp16;
    if (!ds.bf16_enabled) ds.bf16_enabled = want_bf16;
}

void resolve_with_train_args(DeepSpeedConfig& ds, const TrainArgs& a, int world_size) {
    std::vector<std::string> mismatches;
    fill_match(ds.train_micro_batch_size_per_gpu, true, "train_micro_batch_size_per_gpu", a.per_device_train_batch_size,
               "per_device_train_batch_size", mismatches);
    fill_match(ds.gradient_accumulation_steps, true, "gradient_accumulation_steps", a.gradient_accumulation_steps,
               "gradient_accumulation_steps", mismatches);
    fill_match(ds.train_batch_size, true, "train_batch_size",
               static_cast<long long>(world_size) * a.per_device_train_batch_size * a.gradient_accumulation_steps,
               "train_batch_size (calculated)", mismatches);
    fill_match(ds.gradient_clipping, a.was_given("max_grad_norm"), "gradient_clipping", a.max_grad_norm, "max_grad_norm",
               mismatches);
    if (!ds.bf16_enabled) ds.bf16_enabled = a.bf16;
    else if (*ds.bf16_enabled != a.bf16 && a.was_given("bf16"))
        mismatches.push_back(std::string("- ds bf16.enabled=") + (*ds.bf16_enabled ? "True" : "False") +
                             " vs hf bf16|bf16_full_eval=" + (a.bf16 ? "True" : "False"));
    if (!ds.fp16_enabled) ds.fp16_enabled = a.fp16;
    else if (*ds.fp16_enabled != a.fp16 && a.was_given("fp16"))
        mismatches.push_back(std::string("- ds fp16.enabled=") + (*ds.fp16_enabled ? "True" : "False") +
                             " vs hf fp16|fp16_full_eval+fp16_backend(amp)=" + (a.fp16 ? "True" : "False"));
    if (ds.optimizer) fill_optimizer_from_flags(*ds.optimizer, a, mismatches);
    if (ds.scheduler) fill_scheduler_from_flags(*ds.scheduler, a, mismatches);
    fail_on_mismatches(ds.source, mismatches);
}

void resolve_with_hidden_size(DeepSpeedConfig& ds, long long hidden_size) {
    auto& z = ds.zero_optimization;
    if (!z.reduce_bucket_size) z.reduce_bucket_size = hidden_size * hidden_size;
    if (z.stage == 3) {
        if (!z.stage3_prefetch_bucket_size)
            z.stage3_prefetch_bucket_size = static_cast<long long>(0.9 * static_cast<double>(hidden_size * hidden_size));
        if (!z.stage3_param_persistence_threshold) z.stage3_param_persistence_threshold = 10 * hidden_size;
    }
}

json DeepSpeedConfig::to_json() const {
    auto or_auto = [](const auto& v) { return v ? json(*v) : json("auto"); };
    json j;
    j["train_batch_size"] = or_auto(train_batch_size);
    j["train_micro_batch_size_per_gpu"] = or_auto(train_micro_batch_size_per_gpu);
    j["gradient_accumulation_steps"] = or_auto(gradient_accumulation_steps);
    j["gradient_clipping"] = or_auto(gradient_clipping);
    const auto& z = zero_optimization;
    auto nvme = [](const std::string& p) { return p.empty() ? json(nullptr) : json(p); };
    j["zero_optimization"] = {
        {"stage", z.stage},
        {"offload_optimizer", {{"device", to_string(z.offload_optimizer.device)},
                               {"nvme_path", nvme(z.offload_optimizer.nvme_path)},
                               {"pin_memory", z.offload_optimizer.pin_memory},
                               {"buffer_count", z.offload_optimizer.buffer_count},
                               {"fast_init", z.offload_optimizer.fast_init}}},
        {"offload_param", {{"device", to_string(z.offload_param.device)},
                           {"nvme_path", nvme(z.offload_param.nvme_path)},
                           {"pin_memory", z.offload_param.pin_memory},
                           {"buffer_count", z.offload_param.buffer_count},
                           {"buffer_size", z.offload_param.buffer_size},
                           {"max_in_cpu", z.offload_param.max_in_cpu}}},
        {"overlap_comm", z.overlap_comm.value_or(z.stage == 3)},
        {"contiguous_gradients", z.contiguous_gradients},
        {"reduce_scatter", z.reduce_scatter},
        {"allgather_partitions", z.allgather_partitions},
        {"round_robin_gradients", z.round_robin_gradients},
        {"allgather_bucket_size", z.allgather_bucket_size},
        {"reduce_bucket_size", or_auto(z.reduce_bucket_size)},
        {"stage3_prefetch_bucket_size", or_auto(z.stage3_prefetch_bucket_size)},
        {"stage3_param_persistence_threshold", or_auto(z.stage3_param_persistence_threshold)},
        {"stage3_max_live_parameters", z.stage3_max_live_parameters},
        {"stage3_max_reuse_distance", z.stage3_max_reuse_distance},
        {"sub_group_size", z.sub_group_size},
        {"stage3_gather_16bit_weights_on_model_save", z.stage3_gather_16bit_weights_on_model_save},
    };
    j["zero3_init_flag"] = zero3_init_flag;
    j["bf16"] = {{"enabled", or_auto(bf16_enabled)}};
    j["fp16"] = {{"enabled", or_auto(fp16_enabled)}, {"auto_cast", fp16.auto_cast},
                 {"loss_scale", fp16.loss_scale}, {"initial_scale_power", fp16.initial_scale_power},
                 {"loss_scale_window", fp16.loss_scale_window}, {"hysteresis", fp16.hysteresis},
                 {"min_loss_scale", fp16.min_loss_scale}};
    if (optimizer) j["optimizer"] = config::to_json(*optimizer);
    if (scheduler) j["scheduler"] = config::to_json(*scheduler);
    j["aio"] = {{"block_size", aio.block_size}, {"queue_depth", aio.queue_depth},
                {"thread_count", aio.thread_count}, {"single_submit", aio.single_submit},
                {"overlap_events", aio.overlap_events}};
    j["zero_allow_untested_optimizer"] = zero_allow_untested_optimizer;
    if (!communication_data_type.empty()) j["communication_data_type"] = communication_data_type;
    return j;
}

}  // namespace ftl::config
