#include "train/preflight.h"

#include <cstdio>

#include "train/gpu_memory.h"
#include "train/inputs.h"
#include "train/optimizer_step.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/strings.h"
#include "zero/memory_estimate.h"

#ifdef FTL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace ftl::train {
namespace {

std::string gib(int64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
    return text;
}

struct RankMemory {
    int64_t bytes = 0;
    std::string source;  // where the figure comes from, for messages
};

// RankContext::memory_per_rank when set, else the GPU's free memory, else the host's available
// memory shared by the machine's ranks.
RankMemory rank_memory(const config::RunConfig& run, const RankContext& rank) {
    if (rank.memory_per_rank) return {*rank.memory_per_rank, "FTLAUNCH_MEMORY_PER_RANK"};
    if (rank.device == "cuda") return {device_free_bytes(rank.torch_device()), "free on " + rank.torch_device().str()};
    return {available_host_bytes() / std::max(1, run.processes_per_machine),
            "the host's available memory shared by " + std::to_string(run.processes_per_machine) + " ranks"};
}

}  // namespace

void check_run_settings(const config::RunConfig& run, const RankContext& rank, const Log& log) {
    const config::TrainArgs& args = run.train;
    const auto& zero = run.deepspeed.zero_optimization;
    const bool offloads_param = run.uses_deepspeed && zero.offload_param.device != config::OffloadDevice::kNone;
    if (offloads_param && zero.stage == 3 && !args.use_peft_lora && zero.offload_param.device == config::OffloadDevice::kNvme)
        fail(ErrorKind::kConfig, "zero_optimization.offload_param.device nvme: full fine-tuning trains its partitioned "
                                 "weights in place, and this build keeps trained slices in host memory only; use cpu "
                                 "(or LoRA, whose frozen base weights can live on NVMe)");
    if (rank.rank == 0 && offloads_param && zero.stage != 3)
        log.warn("zero_optimization.offload_param: parameters are offloaded only under ZeRO stage 3; they stay on " +
                 rank.device);
    if (four_bit_config(args) && !args.use_peft_lora)
        fail(ErrorKind::kConfig, "--use_4bit_quantization True needs --use_peft_lora True: 4-bit base weights are frozen, "
                                 "so only adapters can train on them (transformers refuses to fine-tune a purely "
                                 "quantized model too)");
    if (args.use_8bit_quantization) {
        if (!args.use_peft_lora)
            fail(ErrorKind::kConfig, "--use_8bit_quantization True needs --use_peft_lora True: 8-bit base weights are frozen, "
                                     "so only adapters can train on them");
        if (run.uses_deepspeed && zero.stage == 3)
            fail(ErrorKind::kConfig, "--use_8bit_quantization True under ZeRO stage 3: LLM.int8 weights carry per-row scales "
                                     "that ZeRO-3 cannot partition with them; use ZeRO stage 0-2, or --use_4bit_quantization "
                                     "True with --bnb_4bit_quant_storage_dtype bfloat16 (the QLoRA + ZeRO-3 recipe)");
    }
    // The run's length is not known yet: the schedule is built over one step for its checks.
    if (!(run.uses_deepspeed && run.deepspeed.scheduler)) {
        const double learning_rate = optimizer_choice_for(run, args, false).learning_rate;
        if (!plateau_schedule_for(run, args, learning_rate)) learning_rate_schedule_for(run, args, 1, learning_rate);
    }
}

std::string check_memory_fits(const config::RunConfig& run, const model::DecoderConfig& model, const RankContext& rank) {
    const bool on_gpu = rank.device == "cuda";
    const zero::EstimateInputs inputs = zero::estimate_inputs(run, model);
    const zero::RankMemory need = zero::estimate_rank_memory(inputs, on_gpu);
    const auto [available, source] = rank_memory(run, rank);
    const std::string parts = "base weights " + gib(need.base_weights) + ", trainable " + gib(need.trainable) +
                              ", gradients " + gib(need.gradients) + ", optimizer " + gib(need.optimizer) +
                              ", ZeRO-3 gather buffers " + gib(need.gather_buffers) + ", activations " +
                              gib(need.activations) + ", runtime " + gib(need.runtime);
    if (need.device_total() <= available)
        return "memory pre-flight: about " + gib(need.device_total()) + " per rank needed (" + parts + "), " +
               gib(available) + " available (" + source + ")";
    const std::vector<std::string> fits = zero::settings_that_fit(inputs, on_gpu, available);
    fail(ErrorKind::kConfig,
         "this run needs about " + gib(need.device_total()) + " per rank (" + parts + ") but rank " +
             std::to_string(rank.rank) + " has " + gib(available) + " (" + source + "). " +
             (fits.empty() ? "No nearby setting fits; use a smaller model or bigger devices."
                           : "Settings that fit:\n  " + join(fits, "\n  ")) +
             "\n(`ftlaunch estimate-memory` with the same flags prints the whole table; set "
             "FTLAUNCH_MEMORY_PER_RANK=<bytes> to state the memory a rank may use.)");
}

KeptLayers layers_kept_in_memory(const config::RunConfig& run, const model::DecoderConfig& model, const RankContext& rank) {
    const bool on_gpu = rank.device == "cuda";
    zero::EstimateInputs inputs = zero::estimate_inputs(run, model);
    const auto [available, source] = rank_memory(run, rank);
    KeptLayers out;
    out.count = zero::layers_to_keep(inputs, on_gpu, available);
    inputs.kept_layers = out.count;
    out.description = "gradient checkpointing auto: the last " + std::to_string(out.count) + " of " +
                      std::to_string(model.num_layers) + " decoder layers keep their activations, the rest are " +
                      "recomputed (estimate " + gib(zero::estimate_rank_memory(inputs, on_gpu).device_total()) +
                      " per rank within 90% of " + gib(available) + ", " + source + ")";
    return out;
}

void check_compute_dtype(const c10::Device& device, c10::ScalarType dtype, const std::string& flag) {
#ifdef FTL_WITH_CUDA
    if (!device.is_cuda() || dtype != c10::kBFloat16) return;
    const auto* properties = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
    if (properties->major >= 8) return;
    fail(ErrorKind::kConfig, flag + ": " + std::string(properties->name) + " (compute capability " +
                                 std::to_string(properties->major) + "." + std::to_string(properties->minor) +
                                 ") has no bfloat16 arithmetic; use float16 or float32");
#else
    (void)device;
    (void)dtype;
    (void)flag;
#endif
}

}  // namespace ftl::train
