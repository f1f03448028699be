// Model FLOPs utilisation (MFU): the FLOPs the model needs per second of training, divided by
// what the device could do at its peak.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>

#include "dist/comm.h"
#include "model/model_config.h"

namespace ftl::train {

struct ModelShape {
    int64_t frozen_params = 0;     // weights without gradients (a LoRA base model)
    int64_t trainable_params = 0;  // weights with gradients (adapters, or everything)
    int64_t layers = 0;
    int64_t hidden = 0;
    // The decoder layers whose forward runs again in backward (gradient checkpointing; ZeRO-3
    // always recomputes) and their parameters; 0 without recomputation.
    int64_t recomputed_params = 0;
    int64_t recomputed_layers = 0;
};

// Training FLOPs per token at `sequence_length` tokens per sequence. PaLM (Chowdhery et al. 2022,
// appendix B) counts 6N + 12·L·H·S: 2N for the forward, 4N for the backward (gradients of the
// inputs and of the weights) and 12·L·H·S for attention's scores and values. A frozen weight has
// no weight gradient, so it costs 4 FLOPs per parameter per token instead of 6. A recomputed
// layer's forward runs twice, and issue 8 asks that the figure show the device's real work: +2
// per recomputed parameter and +4·L·H·S for the attention forward (so with recomputation the
// logged "mfu" counts hardware FLOPs, as a frozen 8B base's ~6N a token).
double training_flops_per_token(const ModelShape& shape, int64_t sequence_length);

// The decoder layers whose forward runs again in backward: all under ZeRO-3 (`partitioned`);
// with checkpointing those whose index is a multiple of `every` (> 1), else all but the last
// `kept` (--gradient_checkpointing auto); none without.
int64_t recomputed_layer_count(int64_t layers, bool partitioned, bool checkpointing, int64_t every, int64_t kept);

// The shape for a run of `config` with `frozen` and `trainable` parameters (LoRA's adapters, which
// all sit in the decoder layers, or every weight), `recomputed_layers` of them recomputed.
ModelShape model_shape(const model::DecoderConfig& config, int64_t frozen, int64_t trainable, int64_t recomputed_layers);

struct PeakFlops {
    double flops_per_second = 0.0;
    std::string source;  // "FTLAUNCH_PEAK_TFLOPS", "NVIDIA H100 bf16 datasheet", "measured ..."
};

// The device's peak in the dtype the matmuls run in (`compute`: the autocast dtype or float32).
// `given` (TFLOP/s, from FTLAUNCH_PEAK_TFLOPS) wins; else the datasheet's dense figure for an
// A100/H100/H200; else a measurement: the best rate of repeated square matmuls over ~0.2 s, so
// MFU is then a fraction of what this device sustains for a large matmul.
PeakFlops device_peak_flops(const c10::Device& device, c10::ScalarType compute, std::optional<double> given_tflops);

// A figure each rank counts and the run reports summed over ranks: the HF Trainer's total_flos
// (Trainer.store_flos) and num_input_tokens_seen (gathered each micro-batch there; here at each
// read, which is the same sum).
class RankTotal {
public:
    void add(double value) { pending_ += value; }
    void store(dist::Comm* comm);  // collective when `comm` is set: every rank's pending into the total
    void restore(double total) { total_ = total; }  // a resumed run's
    double total() const { return total_; }

private:
    double pending_ = 0.0;  // this rank's, since the last store
    double total_ = 0.0;    // every rank's, up to the last store
};

}  // namespace ftl::train
