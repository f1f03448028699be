#include "zero/partitioned_adamw.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>

#include "util/error.h"

namespace ftl::zero {
namespace {

std::vector<int64_t> numels_of(const PartitionedAdamW::NamedTensors& params) {
    std::vector<int64_t> out;
    for (const auto& [name, t] : params) out.push_back(t.numel());
    return out;
}

}  // namespace

PartitionedAdamW::PartitionedAdamW(NamedTensors params, optim::AdamWOptions options, dist::Comm* comm, int rank,
                                   int world_size, const std::optional<OptimizerOffload>& offload)
    : params_(std::move(params)),
      options_(options),
      comm_(comm),
      layout_(numels_of(params_), rank, world_size) {
    if (params_.empty()) fail(ErrorKind::kInternal, "PartitionedAdamW: no trainable parameters");
    fp32_ = params_.front().second.options().dtype(at::kFloat);
    at::NoGradGuard no_grad;
    const at::Tensor slice = layout_.local(layout_.flatten(parameter_list(), fp32_));
    if (offload) {
        offloaded_ = std::make_unique<OffloadedAdamWState>(slice, *offload, rank);
        return;
    }
    master_ = slice.clone();
    exp_avg_ = at::zeros_like(master_);
    exp_avg_sq_ = at::zeros_like(master_);
}

std::string PartitionedAdamW::placement() const { return offloaded_ ? offloaded_->describe() : "device memory"; }

std::vector<at::Tensor> PartitionedAdamW::parameter_list() const {
    std::vector<at::Tensor> out;
    for (const auto& [name, t] : params_) out.push_back(t.detach());
    return out;
}

PartitionedAdamW::StepResult PartitionedAdamW::step(double lr, double max_grad_norm, optim::LossScaler* scaler) {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    for (const auto& [name, t] : params_) grads.push_back(t.grad());
    // 1. each rank's slice of the gradients summed over ranks
    const at::Tensor flat_grad = layout_.flatten(grads, fp32_);
    at::Tensor grad = at::empty({layout_.shard()}, fp32_);
    if (comm_) comm_->reduce_scatter(grad, flat_grad, dist::ReduceOp::kSum);
    else grad.copy_(flat_grad);
    // 2. fp16: unscale; any rank's overflow skips the step on all of them
    StepResult result;
    if (scaler) {
        std::vector<at::Tensor> slice{grad};
        const bool finite_here = scaler->unscale(slice);
        at::Tensor overflow = at::full({1}, finite_here ? 0.0f : 1.0f, fp32_);
        if (comm_) comm_->all_reduce(overflow, dist::ReduceOp::kMax);
        if (overflow.item<float>() != 0.0f) {
            if (finite_here) scaler->mark_overflow();
            result.grad_norm = std::nan("");
            return result;
        }
    }
    // 3. the global norm, clipped as clip_grad_norm_ does
    at::Tensor squares = grad.to(at::kDouble).pow(2).sum().reshape({1});
    if (comm_) comm_->all_reduce(squares, dist::ReduceOp::kSum);
    result.grad_norm = std::sqrt(squares.item<double>());
    if (max_grad_norm > 0) grad.mul_(std::min(1.0, max_grad_norm / (result.grad_norm + 1e-6)));
    // 4. AdamW on the slice (optim::AdamW's update)
    ++step_;
    at::Tensor updated = master_;
    if (offloaded_) {
        updated = at::empty({layout_.shard()}, fp32_);
        offloaded_->step(grad, updated, step_, lr, options_);
    } else {
        optim::adamw_update(master_, grad, exp_avg_, exp_avg_sq_, step_, lr, options_);
    }
    // 5. every rank's updated slice back into the full parameters
    at::Tensor full = at::empty({layout_.padded()}, fp32_);
    if (comm_) comm_->all_gather(full, updated);
    else full.copy_(updated);
    for (size_t i = 0; i < params_.size(); ++i) {
        at::Tensor p = params_[i].second.detach();
        layout_.unflatten_into(full, i, p);
    }
    result.stepped = true;
    return result;
}

void PartitionedAdamW::zero_grad() {
    for (auto& [name, p] : params_)
        if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

PartitionedAdamW::NamedTensors PartitionedAdamW::state() const {
    at::Tensor avg = at::empty({layout_.padded()}, fp32_);
    at::Tensor avg_sq = at::empty_like(avg);
    const at::Tensor mine = offloaded_ ? offloaded_->read(OffloadedAdamWState::kExpAvg).to(fp32_.device()) : exp_avg_;
    const at::Tensor mine_sq = offloaded_ ? offloaded_->read(OffloadedAdamWState::kExpAvgSq).to(fp32_.device()) : exp_avg_sq_;
    if (comm_) {
        comm_->all_gather(avg, mine);
        comm_->all_gather(avg_sq, mine_sq);
    } else {
        avg.copy_(mine);
        avg_sq.copy_(mine_sq);
    }
    NamedTensors out;
    for (size_t i = 0; i < params_.size(); ++i) {
        const auto& [name, p] = params_[i];
        at::Tensor m = at::empty(p.sizes(), fp32_);
        at::Tensor v = at::empty(p.sizes(), fp32_);
        layout_.unflatten_into(avg, i, m);
        layout_.unflatten_into(avg_sq, i, v);
        out.emplace_back("exp_avg." + name, m);
        out.emplace_back("exp_avg_sq." + name, v);
    }
    out.emplace_back("step", at::scalar_tensor(static_cast<double>(step_), at::kDouble));
    return out;
}

void PartitionedAdamW::load_state(const NamedTensors& state) {
    const std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    auto full = [&](const std::string& prefix) {
        std::vector<at::Tensor> parts;
        for (const auto& [name, p] : params_) {
            const auto it = by_name.find(prefix + name);
            if (it == by_name.end()) fail(ErrorKind::kConfig, "optimizer state: missing '" + prefix + name + "'");
            if (it->second.sizes() != p.sizes())
                fail(ErrorKind::kConfig, "optimizer state: '" + prefix + name + "' has the wrong shape for this model");
            parts.push_back(it->second.to(fp32_.device()));
        }
        return layout_.flatten(parts, fp32_);
    };
    at::NoGradGuard no_grad;
    const at::Tensor avg = layout_.local(full("exp_avg.")), avg_sq = layout_.local(full("exp_avg_sq."));
    const at::Tensor master = layout_.local(layout_.flatten(parameter_list(), fp32_));  // the restored weights
    if (offloaded_) {
        offloaded_->write(OffloadedAdamWState::kExpAvg, avg);
        offloaded_->write(OffloadedAdamWState::kExpAvgSq, avg_sq);
        offloaded_->write(OffloadedAdamWState::kMaster, master);
    } else {
        exp_avg_.copy_(avg);
        exp_avg_sq_.copy_(avg_sq);
        master_.copy_(master);
    }
    const auto it = by_name.find("step");
    if (it == by_name.end()) fail(ErrorKind::kConfig, "optimizer state: missing 'step'");
    step_ = static_cast<int64_t>(it->second.item<double>());
}

}  // namespace ftl::zero
