// `ftlaunch estimate-memory`: the memory a run needs per rank (zero/memory_estimate.h), by ZeRO
// stage and offload, for the model, batch and settings the train flags and config describe.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "io/hub.h"
#include "model/model_config.h"
#include "zero/memory_estimate.h"

namespace ftl::app {
namespace {

using nlohmann::json;

std::string gib(double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%8.2f", bytes / (1024.0 * 1024.0 * 1024.0));
    return text;
}

struct Row {
    int stage;
    bool offload_optimizer, offload_params;
    zero::RankMemory memory;
};

}  // namespace

int run_estimate_memory(const Invocation& inv, const Log& log) {
    std::vector<std::string> argv;
    bool as_json = false;
    for (const std::string& a : inv.job_argv) {
        if (a == "--json") as_json = true;
        else argv.push_back(a);
    }
    const config::RunConfig run = config::resolve_run_config(inv.flags, inv.job_token, argv);
    for (const auto& warning : run.warnings) log.warn(warning);
    const std::string model_dir = io::resolve_repo_dir(run.train.model_name_or_path, io::HubCache::from_environment(),
                                                       io::RepoType::kModel, run.train.model_revision);
    const model::DecoderConfig config = model::read_decoder_config(model_dir);
    const zero::ParameterCounts params = zero::count_parameters(config);
    const zero::EstimateInputs planned = zero::estimate_inputs(run, config);
    const int64_t trainable =
        planned.lora ? zero::lora_parameters(config, planned.lora_r, planned.lora_target_modules, false, planned.lora_dora,
                                             planned.lora_target_parameters)
                     : params.total;

    const bool on_gpu = !run.accelerate.use_cpu;  // --cpu / use_cpu: CPU ranks (a smaller runtime share)
    std::vector<Row> rows;
    for (int stage = 0; stage <= 3; ++stage)
        for (int offload = 0; offload <= (stage == 3 ? 2 : stage > 0 ? 1 : 0); ++offload) {
            zero::EstimateInputs in = planned;
            in.zero_stage = stage;
            in.offload_optimizer = offload >= 1;
            in.offload_params = offload == 2;
            rows.push_back({stage, in.offload_optimizer, in.offload_params, zero::estimate_rank_memory(in, on_gpu)});
        }
    const int nodes = std::max(1, run.world_size / std::max(1, run.processes_per_machine));
    const std::vector<zero::DeepSpeedEstimate> reference =
        zero::deepspeed_estimates(std::max(2, planned.zero_stage), params, run.processes_per_machine, nodes);

    if (as_json) {
        json out = {{"model", {{"model_type", config.model_type}, {"total_params", params.total},
                               {"largest_layer_params", params.largest_tensor}, {"trainable_params", trainable}}},
                    {"world_size", run.world_size},
                    {"this_run", {{"zero_stage", planned.zero_stage}, {"offload_optimizer", planned.offload_optimizer},
                                  {"offload_params", planned.offload_params}}},
                    {"rows", json::array()},
                    {"deepspeed", json::array()}};
        for (const Row& r : rows)
            out["rows"].push_back({{"zero_stage", r.stage}, {"offload_optimizer", r.offload_optimizer},
                                   {"offload_params", r.offload_params}, {"base_weights", r.memory.base_weights},
                                   {"trainable", r.memory.trainable}, {"gradients", r.memory.gradients},
                                   {"optimizer", r.memory.optimizer}, {"gather_buffers", r.memory.gather_buffers},
                                   {"activations", r.memory.activations}, {"runtime", r.memory.runtime},
                                   {"device_total", r.memory.device_total()}, {"host", r.memory.host}});
        for (const auto& e : reference)
            out["deepspeed"].push_back({{"options", e.options}, {"per_cpu", e.per_cpu}, {"per_gpu", e.per_gpu}});
        std::cout << out.dump(2) << std::endl;
        return 0;
    }
    std::printf("Model %s: %lld parameters (%lld layers, hidden %lld, vocabulary %lld); trainable %lld (%s)\n",
                config.model_type.c_str(), static_cast<long long>(params.total), static_cast<long long>(config.num_layers),
                static_cast<long long>(config.hidden_size), static_cast<long long>(config.vocab_size),
                static_cast<long long>(trainable),
                planned.lora ? ("LoRA r=" + std::to_string(planned.lora_r) + " on " + planned.lora_target_modules).c_str()
                             : "full fine-tuning");
    std::printf("Per rank (GiB), %d ranks, micro-batch %lld x %lld tokens, gradient checkpointing %s, activations %d-byte%s:\n",
                run.world_size, static_cast<long long>(planned.micro_batch), static_cast<long long>(planned.sequence_length),
                planned.gradient_checkpointing ? "on" : "off", planned.activation_bytes,
                planned.base_weights == zero::BaseWeights::kFloat32 ? "" : ", 4-bit base weights");
    std::printf("  stage offload            base  trainable    grads  optimizer   gather  activations  runtime | device    host\n");
    for (const Row& r : rows) {
        const bool mine = r.stage == planned.zero_stage && r.offload_optimizer == planned.offload_optimizer &&
                          r.offload_params == planned.offload_params;
        const char* offload = r.offload_params ? "optimizer+params" : r.offload_optimizer ? "optimizer" : "none";
        std::printf("%s %d     %-16s%s %s %s %s %s %s %s | %s %s\n", mine ? "*" : " ", r.stage, offload,
                    gib(static_cast<double>(r.memory.base_weights)).c_str(), gib(static_cast<double>(r.memory.trainable)).c_str(),
                    gib(static_cast<double>(r.memory.gradients)).c_str(), gib(static_cast<double>(r.memory.optimizer)).c_str(),
                    gib(static_cast<double>(r.memory.gather_buffers)).c_str(), gib(static_cast<double>(r.memory.activations)).c_str(),
                    gib(static_cast<double>(r.memory.runtime)).c_str(), gib(static_cast<double>(r.memory.device_total())).c_str(),
                    gib(static_cast<double>(r.memory.host)).c_str());
    }
    std::printf("  (* = this run's settings)\n");
    std::printf("DeepSpeed's model-states estimate for full fine-tuning of this model (ZeRO-%d, buffer factor 1.5):\n",
                std::max(2, planned.zero_stage));
    std::printf("  per CPU  |  per GPU | options\n");
    for (const auto& e : reference)
        std::printf(" %s | %s | %s\n", gib(e.per_cpu).c_str(), gib(e.per_gpu).c_str(), e.options.c_str());
    return 0;
}

}  // namespace ftl::app
