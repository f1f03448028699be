// What resuming a run needs besides train/checkpoint.h's files: the weights copied back into the
// live tensors (whole, or into ZeRO-3's slices), and the run's identity, kept in each checkpoint's
// manifest, with the check that a checkpoint belongs to this run.
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "config/train_args.h"
#include "model/decoder.h"
#include "train/inputs.h"
#include "zero/sharding.h"

namespace ftl::train {

// Copies a checkpoint's adapter (stem "adapter_model") or trainable weights ("model") into the
// live tensors; a missing name or another shape fails naming it and the folder.
void restore_weights(const std::string& dir, const std::string& stem,
                     std::vector<std::pair<std::string, at::Tensor>>& trainable);

// The same for weights partitioned by ZeRO-3 (full fine-tuning): each rank copies its slices out
// of the mapped checkpoint.
void restore_partitioned_weights(const std::string& dir, const std::string& stem, zero::Sharding& sharding);

// What a checkpoint of this run belongs to, for its manifest: the base model (config.json's
// checksum; the name is informational), the vocabulary after resizing, full fine-tuning or the
// adapter's shape, the 4-bit scheme, and the layout (world size and ZeRO stage, informational:
// the optimizer state is saved unpartitioned, so either may change on resume).
nlohmann::json run_identity(const config::TrainArgs& args, const JobInputs& inputs, model::CausalLM& lm, int world_size,
                            int zero_stage);

// Refuses to resume from a checkpoint of another run: another base model, vocabulary, adapter
// shape or 4-bit scheme (ErrorKind::kConfig naming the difference). World size and ZeRO stage may
// differ.
void check_same_run(const nlohmann::json& saved, const nlohmann::json& current, const std::string& dir);

}  // namespace ftl::train
