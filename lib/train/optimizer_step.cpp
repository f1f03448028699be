#include "train/optimizer_step.h"

#include <ATen/core/grad_mode.h>

#include <cmath>

#include "train/batches.h"
#include "train/offload.h"
#include "util/error.h"

namespace ftl::train {

OptimizerLayout optimizer_layout_for(const config::RunConfig& run, int64_t hidden_size) {
    OptimizerLayout layout;
    if (!run.uses_deepspeed) return layout;
    const config::ZeroOptimizationConfig& zero = run.deepspeed.zero_optimization;
    layout.zero_stage = zero.stage;
    layout.offload = optimizer_offload_for(run);
    layout.reduce_bucket_elements = zero.reduce_bucket_size ? *zero.reduce_bucket_size : hidden_size * hidden_size;
    layout.overlap_comm = zero.overlap_comm.value_or(zero.stage == 3);
    return layout;
}

OptimizerChoice optimizer_choice_for(const config::RunConfig& run, const config::TrainArgs& args, bool fused) {
    OptimizerChoice choice;
    if (!run.uses_deepspeed || !run.deepspeed.optimizer) {
        choice.options = {args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay, fused};
        choice.learning_rate = args.learning_rate;
        const int state_bits = config::bitsandbytes_state_bits(args.optim);
        if (state_bits == 0) return choice;
        if (run.uses_deepspeed)
            fail(ErrorKind::kConfig, "--optim " + args.optim + " under DeepSpeed: DeepSpeed hands a client optimizer its "
                                     "flattened fp32 partitions, so bitsandbytes' 8-bit blocks and its 4096-element "
                                     "threshold fall across tensors there, a layout this build does not reproduce; run "
                                     "it without DeepSpeed (one process, or multi_gpu data parallel), or use --optim "
                                     "adamw_torch_fused or the DeepSpeed config's optimizer section");
        choice.options.fused = false;
        choice.bitsandbytes = state_bits == 8 ? BitsandbytesState::k8bit : BitsandbytesState::k32bit;
        choice.description = "--optim " + args.optim + ": bitsandbytes' AdamW with " +
                             (choice.bitsandbytes == BitsandbytesState::k8bit
                                  ? "8-bit blockwise state (tensors of 4096 elements or more)"
                                  : "32-bit state") +
                             (args.optim.rfind("paged", 0) == 0 ? ", kept in device memory (not paged)" : "");
        return choice;
    }
    // resolve_with_train_args filled every "auto"; keys the section left out hold DeepSpeed's defaults.
    const config::DeepSpeedOptimizerConfig& o = *run.deepspeed.optimizer;
    choice.options = {o.beta1.value(), o.beta2.value(), o.eps.value(), o.weight_decay.value(), fused};
    choice.trainer_groups = false;
    choice.learning_rate = o.lr.value();
    choice.description = run.deepspeed.source + ": optimizer " + o.type + " (lr " + nlohmann::json(choice.learning_rate).dump() +
                         ", betas [" + nlohmann::json(choice.options.beta1).dump() + ", " +
                         nlohmann::json(choice.options.beta2).dump() + "], eps " + nlohmann::json(choice.options.eps).dump() +
                         ", weight_decay " + nlohmann::json(choice.options.weight_decay).dump() + " on every trainable tensor)";
    return choice;
}

optim::LossScalerOptions loss_scaling_for(const config::RunConfig& run) {
    optim::LossScalerOptions options;
    if (!run.uses_deepspeed) return options;
    const config::Fp16Config& fp16 = run.deepspeed.fp16;
    if (fp16.loss_scale > 0) {
        options.policy = optim::LossScalePolicy::kStatic;
        options.init_scale = fp16.loss_scale;
        return options;
    }
    options.policy = optim::LossScalePolicy::kDeepSpeed;
    options.init_scale = std::ldexp(1.0, fp16.initial_scale_power);
    options.growth_interval = fp16.loss_scale_window;
    options.hysteresis = fp16.hysteresis;
    options.min_scale = fp16.min_loss_scale;
    return options;
}

optim::LearningRateSchedule learning_rate_schedule_for(const config::RunConfig& run, const config::TrainArgs& args,
                                                       int64_t total_steps, double learning_rate) {
    const int64_t warmup = optim::warmup_steps_for(total_steps, args.warmup_steps, args.warmup_ratio);
    if (!run.uses_deepspeed || !run.deepspeed.scheduler)
        return optim::trainer_schedule(args.lr_scheduler_type, args.lr_scheduler_kwargs, learning_rate, warmup, total_steps);
    config::DeepSpeedConfig ds = run.deepspeed;
    config::resolve_with_steps(ds, total_steps, warmup, learning_rate);
    const config::DeepSpeedSchedulerConfig& s = *ds.scheduler;
    using Type = optim::DeepSpeedSchedule::Type;
    optim::DeepSpeedSchedule schedule;
    schedule.type = s.type == "WarmupLR" ? Type::kWarmupLR : s.type == "WarmupDecayLR" ? Type::kWarmupDecayLR : Type::kWarmupCosineLR;
    schedule.warmup_min_lr = s.warmup_min_lr.value();
    schedule.warmup_max_lr = s.warmup_max_lr.value();
    schedule.warmup_min_ratio = s.warmup_min_ratio;
    schedule.cos_min_ratio = s.cos_min_ratio;
    schedule.warmup_num_steps = s.warmup_num_steps.value();
    schedule.total_num_steps = s.total_num_steps.value_or(0);
    schedule.log_warmup = s.log_warmup;
    return optim::deepspeed_schedule(schedule, learning_rate);
}

std::shared_ptr<optim::PlateauSchedule> plateau_schedule_for(const config::RunConfig& run, const config::TrainArgs& args,
                                                             double learning_rate) {
    if (args.lr_scheduler_type != "reduce_lr_on_plateau" || (run.uses_deepspeed && run.deepspeed.scheduler)) return nullptr;
    if (run.uses_deepspeed)
        fail(ErrorKind::kConfig, "--lr_scheduler_type reduce_lr_on_plateau under DeepSpeed: DeepSpeed's engine steps the "
                                 "schedule after every optimizer step without the evaluation metric, which this "
                                 "schedule needs (transformers fails there too); run it without DeepSpeed, or give the "
                                 "DeepSpeed config a scheduler section");
    return std::make_shared<optim::PlateauSchedule>(args.lr_scheduler_kwargs, learning_rate);
}

bool logs_next_step_rate(const config::RunConfig& run) {
    return run.accelerate.distributed_type == config::DistributedType::kDeepSpeed || !run.train.deepspeed.empty();
}

TrainOptimizer::TrainOptimizer(NamedTensors trainable, const OptimizerChoice& choice, const OptimizerLayout& layout,
                               const RankContext& rank)
    : trainable_(trainable), rank_(rank) {
    const optim::AdamWOptions& options = choice.options;
    const bool trainer_groups = choice.trainer_groups;
    if (layout.offload && layout.zero_stage == 0)
        fail(ErrorKind::kInternal, "TrainOptimizer: optimizer offload needs ZeRO stage 1, 2 or 3");
    if (choice.bitsandbytes != BitsandbytesState::kNone) {
        if (layout.zero_stage != 0) fail(ErrorKind::kInternal, "TrainOptimizer: bitsandbytes' AdamW needs ZeRO stage 0");
        bitsandbytes_.emplace(std::move(trainable), options, trainer_groups, choice.bitsandbytes == BitsandbytesState::k8bit);
        return;
    }
    if (layout.zero_stage == 0) {
        replicated_.emplace(std::move(trainable), options, trainer_groups);
        return;
    }
    zero::Sharding* sharding = layout.partitioned;
    if (!sharding) {
        bucketed_ = std::make_unique<zero::BucketedSharding>(std::move(trainable), rank.comm, rank.rank, rank.world_size,
                                                             layout.reduce_bucket_elements, layout.overlap_comm);
        sharding = bucketed_.get();
    }
    partitioned_.emplace(*sharding, options, rank.comm, rank.rank, layout.offload, trainer_groups);
}

namespace {

// Sums `grads` over ranks a bucket at a time (consecutive tensors of the same dtype, up to 2^25
// elements, flattened into one buffer): one collective per bucket, not per tensor (LoRA on an 8B
// model has 448 adapter tensors).
void all_reduce_in_buckets(dist::Comm& comm, std::vector<at::Tensor>& grads) {
    constexpr int64_t kBucketElements = int64_t{1} << 25;
    at::NoGradGuard no_grad;
    for (size_t begin = 0; begin < grads.size();) {
        size_t end = begin + 1;
        int64_t elements = grads[begin].numel();
        while (end < grads.size() && grads[end].scalar_type() == grads[begin].scalar_type() &&
               elements + grads[end].numel() <= kBucketElements)
            elements += grads[end++].numel();
        if (end - begin == 1) {
            comm.all_reduce(grads[begin], dist::ReduceOp::kSum);
        } else {
            std::vector<at::Tensor> flat_views;
            for (size_t i = begin; i < end; ++i) flat_views.push_back(grads[i].reshape({-1}));
            at::Tensor bucket = at::cat(flat_views);
            comm.all_reduce(bucket, dist::ReduceOp::kSum);
            int64_t offset = 0;
            for (size_t i = begin; i < end; ++i) {
                grads[i].copy_(bucket.narrow(0, offset, grads[i].numel()).view_as(grads[i]));
                offset += grads[i].numel();
            }
        }
        begin = end;
    }
}

}  // namespace

std::string TrainOptimizer::reduction() const { return bucketed_ ? bucketed_->describe() : ""; }

void TrainOptimizer::reduce_during_next_backward() {
    if (bucketed_) bucketed_->reduce_during_next_backward();
}

std::string TrainOptimizer::placement() const { return partitioned_ ? partitioned_->placement() : "device memory"; }

TrainOptimizer::StepResult TrainOptimizer::step(double lr, double max_grad_norm, optim::LossScaler* scaler) {
    if (partitioned_) {
        const auto result = partitioned_->step(lr, max_grad_norm, scaler);
        return {result.grad_norm, result.stepped};
    }
    // Each rank's loss is its share sum_r / N: summing gradients over ranks gives d(sum / N).
    std::vector<at::Tensor> grads;
    for (auto& [name, t] : trainable_)
        if (t.grad().defined()) grads.push_back(t.mutable_grad());
    if (rank_.comm) all_reduce_in_buckets(*rank_.comm, grads);
    const bool finite = !scaler || scaler->unscale(grads);
    StepResult result;
    result.grad_norm = clip_grad_norm(grads, max_grad_norm);
    if (finite && bitsandbytes_) bitsandbytes_->step(lr);
    else if (finite) replicated_->step(lr);
    result.stepped = finite;
    return result;
}

void TrainOptimizer::zero_grad() {
    if (partitioned_) partitioned_->zero_grad();
    else if (bitsandbytes_) bitsandbytes_->zero_grad();
    else replicated_->zero_grad();
}

int64_t TrainOptimizer::steps() const {
    return partitioned_ ? partitioned_->steps() : bitsandbytes_ ? bitsandbytes_->steps() : replicated_->steps();
}

TrainOptimizer::NamedTensors TrainOptimizer::state() const {
    return partitioned_ ? partitioned_->state() : bitsandbytes_ ? bitsandbytes_->state() : replicated_->state();
}

void TrainOptimizer::load_state(const NamedTensors& state) {
    if (partitioned_) partitioned_->load_state(state);
    else if (bitsandbytes_) bitsandbytes_->load_state(state);
    else replicated_->load_state(state);
}

}  // namespace ftl::train
