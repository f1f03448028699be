#include "train/optimizer_step.h"

#include <cmath>

#include "train/batches.h"
#include "util/error.h"

namespace ftl::train {

TrainOptimizer::TrainOptimizer(NamedTensors trainable, optim::AdamWOptions options, int zero_stage,
                               const RankContext& rank, const std::optional<zero::OptimizerOffload>& offload,
                               zero::Sharding* partitioned)
    : trainable_(trainable), rank_(rank) {
    if (offload && zero_stage == 0)
        fail(ErrorKind::kInternal, "TrainOptimizer: optimizer offload needs ZeRO stage 1, 2 or 3");
    if (partitioned) partitioned_.emplace(*partitioned, options, rank.comm, rank.rank, offload);
    else if (zero_stage > 0) partitioned_.emplace(std::move(trainable), options, rank.comm, rank.rank, rank.world_size, offload);
    else replicated_.emplace(std::move(trainable), options);
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
