// Pre-flight checks. The memory check: before any weight is loaded, this run's per-rank estimate
// (zero/memory_estimate.h, for what this build executes) against the memory the rank has, so that
// a run that cannot fit stops at once with the figures and the settings that would fit, instead
// of dying in an out-of-memory error minutes or hours later.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "config/run_config.h"
#include "model/model_config.h"
#include "train/rank_context.h"
#include "util/log.h"

namespace ftl::train {

// The settings this build cannot run together, refused before anything loads: offload_param nvme
// for full fine-tuning (trained slices stay in host memory), 4-bit weights without LoRA, 8-bit
// weights, and a learning-rate schedule's parameters; offload_param below stage 3 is a warning
// (DeepSpeed offloads parameters only there).
void check_run_settings(const config::RunConfig& run, const RankContext& rank, const Log& log);

// The memory a rank has: RankContext::memory_per_rank when set (FTLAUNCH_MEMORY_PER_RANK), else
// the free memory of its GPU, else the host's available memory shared by the machine's ranks.
// Returns a line for the log when the estimate fits; throws ftl::Error(kConfig) when it does not,
// naming both figures, the estimate's parts and the settings whose estimate fits.
std::string check_memory_fits(const config::RunConfig& run, const model::DecoderConfig& model, const RankContext& rank);

// --gradient_checkpointing auto: how many of the last decoder layers keep their activations
// (zero::layers_to_keep against the memory check_memory_fits compares with; 0 under ZeRO-3), and
// a line for the log with the figures.
struct KeptLayers {
    int64_t count = 0;
    std::string description;
};
KeptLayers layers_kept_in_memory(const config::RunConfig& run, const model::DecoderConfig& model, const RankContext& rank);

// A compute dtype the device cannot run (bfloat16 on a GPU before compute capability 8.0, as
// torch.cuda.is_bf16_supported() rules) is ftl::Error(kConfig) naming `flag`, the device and what
// would run; every dtype runs on the CPU.
void check_compute_dtype(const c10::Device& device, c10::ScalarType dtype, const std::string& flag);

}  // namespace ftl::train
