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

#include "config/run_config.h"
#include "optim/adamw.h"
#include "optim/bnb_adamw.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "train/rank_context.h"
#include "zero/partitioned_adamw.h"

namespace ftl::train {

// How ZeRO lays the optimizer out (DeepSpeed's zero_optimization).
struct OptimizerLayout {
    int zero_stage = 0;
    std::optional<zero::OptimizerOffload> offload;  // stages 1-3: the state in host memory or on NVMe
    zero::Sharding* partitioned = nullptr;  // stage 3 full fine-tuning: the weights' slices
    int64_t reduce_bucket_elements = 500'000'000;  // reduce_bucket_size
    bool overlap_comm = false;  // reduce gradient buckets while the step's last backward runs
};

// The layout a run's config asks for: its ZeRO stage (0 without DeepSpeed), offload_optimizer,
// reduce_bucket_size ("auto": hidden_size^2, as HF resolves it) and overlap_comm (DeepSpeed's
// default: on for stage 3 only). `partitioned` is left to the caller.
OptimizerLayout optimizer_layout_for(const config::RunConfig& run, int64_t hidden_size);

// The optimizer a run steps with: the DeepSpeed config's "optimizer" section when it has one (the
// HF Trainer lets DeepSpeed build it then; its lr is the schedule's base), else the flags' AdamW
// (--learning_rate, --adam_beta1/2, --adam_epsilon, --weight_decay; `fused` for adamw_torch_fused)
// with the Trainer's two parameter groups: norm weights and biases without weight decay
// (optim::exempt_from_weight_decay); DeepSpeed's optimizer is one group, decay on everything.
// --optim adamw_bnb_8bit / adamw_8bit / paged_adamw_8bit / paged_adamw_32bit: bitsandbytes' AdamW
// (optim::BnbAdamW) with the same groups; refused under DeepSpeed, which would hand it its
// flattened partitions (8-bit blocks across tensors), a layout this build does not reproduce.
enum class BitsandbytesState { kNone, k32bit, k8bit };
struct OptimizerChoice {
    optim::AdamWOptions options;
    bool trainer_groups = true;
    BitsandbytesState bitsandbytes = BitsandbytesState::kNone;
    double learning_rate = 0.0;
    std::string description;  // for the log: which source and the values
};
OptimizerChoice optimizer_choice_for(const config::RunConfig& run, const config::TrainArgs& args, bool fused);

// --fp16's loss scaling: GradScaler's defaults, or under DeepSpeed its fp16 block (loss_scale 0 =
// dynamic from 2^initial_scale_power with loss_scale_window, hysteresis, min_loss_scale; > 0 = static).
optim::LossScalerOptions loss_scaling_for(const config::RunConfig& run);

// The learning-rate schedule over `total_steps` optimizer steps from `learning_rate`: the DeepSpeed
// config's "scheduler" section when it has one (its "auto" step counts filled, checked against the
// run's), else --lr_scheduler_type with --lr_scheduler_kwargs and the flags' warmup.
optim::LearningRateSchedule learning_rate_schedule_for(const config::RunConfig& run, const config::TrainArgs& args,
                                                       int64_t total_steps, double learning_rate);

// --lr_scheduler_type reduce_lr_on_plateau (null for every other type): a rate that evaluations
// lower, not steps. Refused under DeepSpeed, whose engine steps its schedule without a metric
// (where transformers' ReduceLROnPlateau fails).
std::shared_ptr<optim::PlateauSchedule> plateau_schedule_for(const config::RunConfig& run, const config::TrainArgs& args,
                                                             double learning_rate);

// Which rate the HF Trainer logs for a step. Under DeepSpeed the engine steps the schedule inside
// accelerate's backward (DeepSpeedEngineWrapper.backward calls engine.step()), before the Trainer
// reads it: the log shows the next step's rate. Elsewhere (plain, DDP, FSDP) transformers >= 4.51
// reads it between the optimizer's step and the scheduler's (PR 36973): the rate the step applied.
bool logs_next_step_rate(const config::RunConfig& run);

class TrainOptimizer {
public:
    using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

    // `trainable`: the tensors AdamW updates, whole on every rank (empty when
    // `layout.partitioned` holds them). `choice`: the update, its options and groups.
    TrainOptimizer(NamedTensors trainable, const OptimizerChoice& choice, const OptimizerLayout& layout,
                   const RankContext& rank);
    // Call before the step's last backward, on every rank: with overlap_comm the gradient buckets
    // are reduced as backward finishes them.
    void reduce_during_next_backward();

    struct StepResult {
        at::Tensor grad_norm;  // 0-dim, on the device: read it only when logging (a read waits)
        bool stepped = false;  // false: fp16 overflow, the update was skipped
    };
    // With each trainable tensor's .grad() summed over this rank's micro-batches: reduce over
    // ranks, unscale (fp16), clip to max_grad_norm (<= 0: no clipping), and step with `lr`.
    StepResult step(double lr, double max_grad_norm, optim::LossScaler* scaler);
    void zero_grad();
    int64_t steps() const;  // updates taken (the schedule's position)
    std::string placement() const;  // where the optimizer state lives
    // How gradients are reduced, in words, for the log ("" without buckets: stage 0, or stage 3's
    // partitioned weights, whose gradients are reduced by their gathers' backward).
    std::string reduction() const;

    NamedTensors state() const;  // collective under ZeRO: call on every rank
    void load_state(const NamedTensors& state);

private:
    NamedTensors trainable_;
    const RankContext& rank_;
    std::optional<optim::AdamW> replicated_;
    std::optional<optim::BnbAdamW> bitsandbytes_;  // ZeRO stage 0 only
    std::unique_ptr<zero::BucketedSharding> bucketed_;  // stages 1-2 (and LoRA's adapters at stage 3)
    std::optional<zero::PartitionedAdamW> partitioned_;
};

}  // namespace ftl::train
