// Per-rank memory of a fine-tuning run, before any weight is loaded: what `ftlaunch
// estimate-memory` prints and what the pre-flight check compares with the memory a rank has.
// Two views:
//  - ftlaunch's own layout (estimate_rank_memory): base weights, trainable weights, gradients,
//    optimizer state, ZeRO-3 gather buffers and activations, for LoRA or full fine-tuning, by
//    stage, offload and 4-bit quantisation;
//  - DeepSpeed's published model-states formulas for full fine-tuning
//    (deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs and
//    stage3.estimate_zero3_model_states_mem_needs), for comparison with what people know.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/run_config.h"
#include "model/model_config.h"

namespace ftl::zero {

// Parameter counts of a decoder model from its config.json, as transformers counts them
// (sum of numel over parameters, a tied lm_head once).
struct ParameterCounts {
    int64_t total = 0;
    int64_t largest_tensor = 0;  // DeepSpeed's largest_layer_params: the biggest module's own parameters
    int64_t embeddings = 0, per_layer = 0, head = 0;  // head: final norm (+ lm_head when untied)
    int64_t per_layer_norms = 0;                       // of per_layer: the norms' weights (and gpt_oss's sinks)
    // Of all layers together: the linears' weights and biases, and of those the MoE layers'
    // routers and experts' stacks (which 4-bit and 8-bit loading leave in floating point).
    int64_t layer_linears = 0, moe_mlp = 0;
    // A gemma3 checkpoint's vision tower and projector: counted in total (as transformers and
    // DeepSpeed count them) but never loaded by ftlaunch.
    int64_t vision = 0;
};
ParameterCounts count_parameters(const model::DecoderConfig& config);

// LoRA parameters for `target_modules` ("all-linear", a comma list, or a regex when
// `targets_are_regex`) at rank r: r x (in + out) per adapted linear, + out with DoRA's magnitudes;
// on a MoE model also the experts' stacks and routers `target_parameters` names (peft/moe_lora.h).
int64_t lora_parameters(const model::DecoderConfig& config, int64_t r, const std::string& target_modules,
                        bool targets_are_regex, bool use_dora = false,
                        const std::vector<std::string>& target_parameters = {});

enum class BaseWeights { kFloat32, kNf4, kNf4Nested, kInt8 };

struct EstimateInputs {
    model::DecoderConfig model;
    int world_size = 1;
    int ranks_per_machine = 1;
    int zero_stage = 0;
    bool offload_optimizer = false;  // to host memory
    bool offload_params = false;     // stage 3: the base weights' slices on the host
    bool lora = true;
    int64_t lora_r = 8;
    std::string lora_target_modules = "all-linear";
    std::vector<std::string> lora_target_parameters;  // PEFT's target_parameters (MoE experts and routers)
    bool lora_dora = false;  // DoRA: a magnitude per output row of each adapted linear
    BaseWeights base_weights = BaseWeights::kFloat32;
    // LoRA under bf16/fp16 autocast: the frozen linears (the decoder's unless 4-bit, and an untied
    // lm_head) are kept in 16 bits (train::model_types).
    bool frozen_linears_16bit = false;
    // LoRA's whole frozen base (embeddings, norms too) in 16 bits (config::frozen_base_dtype): the
    // residual stream, and recompute's saved layer inputs, then are 16-bit too.
    bool frozen_base_16bit = false;
    // LoRA's frozen input embeddings in host memory on a GPU without ZeRO-3 when untied
    // (train::embeddings_stay_on_host; a resized vocabulary, which keeps them, is not foreseen here).
    bool embeddings_on_host = false;
    // The fused kernels and flash attention on a GPU (--fused_kernels, on by default).
    bool fused_kernels = true;
    int64_t micro_batch = 1;
    int64_t sequence_length = 1024;
    bool gradient_checkpointing = true;
    // With checkpointing (and without ZeRO-3, which recomputes every layer): the last decoder layers
    // that keep their activations instead of being recomputed (--gradient_checkpointing auto).
    int64_t kept_layers = 0;
    int activation_bytes = 4;  // 2 under bf16/fp16 autocast
    // bitsandbytes' 8-bit AdamW (--optim adamw_8bit, ...; stage 0 only): 1-byte moments and an fp32
    // absmax per 256 elements each, but for embed_tokens (32-bit, the Trainer's override).
    bool eight_bit_optimizer = false;
};

// Bytes per rank. `device_total` is what the rank's device (GPU, or the CPU rank's share of host
// memory) must hold; `host` what offload moves to host memory.
struct RankMemory {
    int64_t base_weights = 0, trainable = 0, gradients = 0, optimizer = 0, gather_buffers = 0, activations = 0;
    int64_t runtime = 0;  // CUDA context and allocator slack, or LibTorch's CPU runtime
    int64_t host = 0;
    int64_t device_total() const {
        return base_weights + trainable + gradients + optimizer + gather_buffers + activations + runtime;
    }
};
RankMemory estimate_rank_memory(const EstimateInputs& in, bool on_gpu);

// --gradient_checkpointing auto: the most decoder layers (the last ones) that may keep their
// activations with the estimate within 90% of `available` bytes (the rest is margin for the
// allocator's fragmentation); 0 when checkpointing is off, under ZeRO-3, or when none fits.
int64_t layers_to_keep(EstimateInputs in, bool on_gpu, int64_t available);

// The run's inputs from its resolved configuration (stage, offload, LoRA, 4-bit, batch, length,
// checkpointing, precision): optimizer offload under stages 1-3, parameter offload under stage 3,
// as DeepSpeed and this build apply them.
EstimateInputs estimate_inputs(const config::RunConfig& run, const model::DecoderConfig& model);

// DeepSpeed's model-states estimates (bytes per GPU and per CPU) for full fine-tuning.
struct DeepSpeedEstimate {
    std::string options;  // e.g. "offload_param=cpu, offload_optimizer=cpu, zero_init=1"
    double per_cpu = 0, per_gpu = 0;
};
std::vector<DeepSpeedEstimate> deepspeed_estimates(int stage, const ParameterCounts& params, int gpus_per_node,
                                                   int nodes, double additional_buffer_factor = 1.5);

// Settings near `in` whose estimate fits in `available` bytes per rank, each described as the
// flags to change ("--per_device_train_batch_size 2", "zero_stage 3", ...); empty if none does.
std::vector<std::string> settings_that_fit(const EstimateInputs& in, bool on_gpu, int64_t available);

}  // namespace ftl::zero
