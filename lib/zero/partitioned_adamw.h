// ZeRO's partitioned optimizer: each rank keeps the fp32 master copy, the AdamW moments and the
// reduced gradients only for its slice of the trainable parameters, laid out by a zero::Sharding
// (stages 1-2: a flat 1/world_size of parameters every rank holds whole; stage 3 without LoRA:
// the slices zero::PartitionedWeights holds). One optimizer step:
//   1. this rank's slice of the gradients summed over ranks (Sharding::reduced_gradients);
//   2. (fp16) unscale the slice; a non-finite value on any rank skips the step everywhere;
//   3. global gradient norm = sqrt(all-reduce of the slices' squared norms); clip by max_norm
//      with torch.nn.utils.clip_grad_norm_'s coefficient;
//   4. AdamW (optim/adamw.h's update, element for element) on the slice; with offload_optimizer,
//      on the CPU over state kept in host memory or on NVMe (zero/offloaded_adamw_state.h);
//   5. the updated slice into the parameters (Sharding::write_parameters).
// Stage 1 and stage 2 run the same collectives here (DeepSpeed's stage 1 also reduce-scatters
// since 0.5); they differ in DeepSpeed only in when the full gradient buffer is freed.
// The optimizer state is exchanged in the unpartitioned form of optim::AdamW (exp_avg.<name>,
// exp_avg_sq.<name>, step), so a checkpoint resumes with any world size or stage.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dist/comm.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "zero/offloaded_adamw_state.h"
#include "zero/sharding.h"

namespace ftl::zero {

class PartitionedAdamW {
public:
    using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

    // `sharding` (not owned) outlives the optimizer. `comm` null = one rank. With `offload`, the
    // fp32 state lives in host memory or on NVMe and step 4 runs on the CPU
    // (zero/offloaded_adamw_state.h). With `trainer_groups`, the tensors
    // optim::exempt_from_weight_decay names step with weight_decay 0 (DeepSpeed keeps the client
    // optimizer's parameter groups apart; the update is elementwise, so ranges of the slice do).
    PartitionedAdamW(Sharding& sharding, optim::AdamWOptions options, dist::Comm* comm, int rank,
                     const std::optional<OptimizerOffload>& offload = std::nullopt, bool trainer_groups = false);

    struct StepResult {
        at::Tensor grad_norm;  // before clipping, over all ranks' gradients; 0-dim, on the device (NaN: skipped)
        bool stepped = false;    // false when fp16 gradients overflowed
    };
    // Steps 1-5 above with the gradients in the parameters' .grad() (summed over micro-batches,
    // not yet over ranks). `lr` is used only when the step is taken.
    StepResult step(double lr, double max_grad_norm, optim::LossScaler* scaler);
    void zero_grad();
    int64_t steps() const { return step_; }
    // Where the state lives: "device memory", or OffloadedAdamWState::describe().
    std::string placement() const;

    // Collective: the full state in optim::AdamW's names; complete on rank 0.
    NamedTensors state() const;
    // Takes this rank's slice of a full state (from any world size).
    void load_state(const NamedTensors& state);

private:
    Sharding& sharding_;
    optim::AdamWOptions options_;
    dist::Comm* comm_;
    // Without offload: this rank's slice [local] fp32 of the parameters and the moments.
    at::Tensor master_;
    at::Tensor exp_avg_;
    at::Tensor exp_avg_sq_;
    std::unique_ptr<OffloadedAdamWState> offloaded_;  // with offload: all three, elsewhere
    optim::DecayMask decay_;
    struct Run {  // a stretch of the slice with one weight decay
        int64_t begin = 0, end = 0;
        bool decays = true;
        at::Tensor step_count;  // options.fused (not offloaded): the step as the fused kernel reads it
    };
    std::vector<Run> runs_;
    int64_t step_ = 0;
};

}  // namespace ftl::zero
