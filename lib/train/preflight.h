// The pre-flight memory check: before any weight is loaded, this run's per-rank estimate
// (zero/memory_estimate.h, for what this build executes) against the memory the rank has, so that
// a run that cannot fit stops at once with the figures and the settings that would fit, instead
// of dying in an out-of-memory error minutes or hours later.
#pragma once

#include <string>

#include "config/run_config.h"
#include "model/model_config.h"
#include "train/rank_context.h"

namespace ftl::train {

// The memory a rank has: RankContext::memory_per_rank when set (FTLAUNCH_MEMORY_PER_RANK), else
// the free memory of its GPU, else the host's available memory shared by the machine's ranks.
// Returns a line for the log when the estimate fits; throws ftl::Error(kConfig) when it does not,
// naming both figures, the estimate's parts and the settings whose estimate fits.
std::string check_memory_fits(const config::RunConfig& run, const model::DecoderConfig& model, const RankContext& rank);

}  // namespace ftl::train
