// One rank's optimizer step, whichever way the optimizer state is laid out:
//   - ZeRO stage 0 (plain data parallel): gradients all-reduced, every rank steps on everything
//     with optim::AdamW;
//   - ZeRO stages 1-3: zero::PartitionedAdamW, each rank stepping on its slice (under stage 3
//     without LoRA, the slices of the parameters zero::PartitionedWeights holds).
// Both give the same numbers; the state is exchanged in one form (optim::AdamW's names), so a
// checkpoint written under one stage or world size resumes under any other.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "train/rank_context.h"
#include "zero/partitioned_adamw.h"

namespace ftl::train {

class TrainOptimizer {
public:
    using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

    // `offload` (ZeRO stages 1-3 only): the optimizer state in host memory or on NVMe.
    // `partitioned` (stage 3 full fine-tuning): the trainable weights' slices, which `trainable`
    // then leaves empty.
    TrainOptimizer(NamedTensors trainable, optim::AdamWOptions options, int zero_stage, const RankContext& rank,
                   const std::optional<zero::OptimizerOffload>& offload = std::nullopt,
                   zero::Sharding* partitioned = nullptr);

    struct StepResult {
        double grad_norm = 0.0;
        bool stepped = false;  // false: fp16 overflow, the update was skipped
    };
    // With each trainable tensor's .grad() summed over this rank's micro-batches: reduce over
    // ranks, unscale (fp16), clip to max_grad_norm (<= 0: no clipping), and step with `lr`.
    StepResult step(double lr, double max_grad_norm, optim::LossScaler* scaler);
    void zero_grad();
    int64_t steps() const;  // updates taken (the schedule's position)
    std::string placement() const;  // where the optimizer state lives

    NamedTensors state() const;  // collective under ZeRO: call on every rank
    void load_state(const NamedTensors& state);

private:
    NamedTensors trainable_;
    const RankContext& rank_;
    std::optional<optim::AdamW> replicated_;
    std::optional<zero::PartitionedAdamW> partitioned_;
};

}  // namespace ftl::train
