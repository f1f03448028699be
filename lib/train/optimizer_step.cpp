#include "train/optimizer_step.h"

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

TrainOptimizer::TrainOptimizer(NamedTensors trainable, optim::AdamWOptions options, const OptimizerLayout& layout,
                               const RankContext& rank)
    : trainable_(trainable), rank_(rank) {
    if (layout.offload && layout.zero_stage == 0)
        fail(ErrorKind::kInternal, "TrainOptimizer: optimizer offload needs ZeRO stage 1, 2 or 3");
    if (layout.zero_stage == 0) {
        replicated_.emplace(std::move(trainable), options);
        return;
    }
    zero::Sharding* sharding = layout.partitioned;
    if (!sharding) {
        bucketed_ = std::make_unique<zero::BucketedSharding>(std::move(trainable), rank.comm, rank.rank, rank.world_size,
                                                             layout.reduce_bucket_elements, layout.overlap_comm);
        sharding = bucketed_.get();
    }
    partitioned_.emplace(*sharding, options, rank.comm, rank.rank, layout.offload);
}

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
    if (rank_.comm)
        for (auto& g : grads) rank_.comm->all_reduce(g, dist::ReduceOp::kSum);
    const bool finite = !scaler || scaler->unscale(grads);
    StepResult result;
    result.grad_norm = clip_grad_norm(grads, max_grad_norm);
    if (finite) replicated_->step(lr);
    result.stepped = finite;
    return result;
}

void TrainOptimizer::zero_grad() {
    if (partitioned_) partitioned_->zero_grad();
    else replicated_->zero_grad();
}

int64_t TrainOptimizer::steps() const { return partitioned_ ? partitioned_->steps() : replicated_->steps(); }

TrainOptimizer::NamedTensors TrainOptimizer::state() const {
    return partitioned_ ? partitioned_->state() : replicated_->state();
}

void TrainOptimizer::load_state(const NamedTensors& state) {
    if (partitioned_) partitioned_->load_state(state);
    else replicated_->load_state(state);
}

}  // namespace ftl::train
