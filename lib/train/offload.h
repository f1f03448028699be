// The offload settings of a run (DeepSpeed's offload_optimizer, offload_param and aio sections)
// in the form the ZeRO module takes them.
#pragma once

#include <optional>

#include "config/run_config.h"
#include "io/direct_file.h"
#include "zero/partitioned_adamw.h"
#include "zero/partitioned_weights.h"

namespace ftl::train {

// DeepSpeed's `aio` section, for the NVMe swap files.
io::AioOptions aio_options(const config::AioConfig& aio);

// offload_optimizer, for ZeRO stages 1-3 (DeepSpeed offloads only partitioned state); nullopt
// when its device is none. Stage 0 with a device: Error(kConfig) naming both keys.
std::optional<zero::OptimizerOffload> optimizer_offload_for(const config::RunConfig& run);

// offload_param for ZeRO-3's partitioned frozen weights; nullopt unless `offloaded`.
std::optional<zero::ParameterOffload> parameter_offload_for(const config::RunConfig& run, bool offloaded);

}  // namespace ftl::train
