#include "zero/partitioned_adamw.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>

#include "util/error.h"

namespace ftl::zero {

PartitionedAdamW::PartitionedAdamW(Sharding& sharding, optim::AdamWOptions options, dist::Comm* comm, int rank,
                                   const std::optional<OptimizerOffload>& offload, bool trainer_groups)
    : sharding_(sharding), options_(options), comm_(comm) {
    if (trainer_groups && options_.weight_decay != 0)
        decay_ = optim::DecayMask(sharding_.local_ranges(optim::exempt_from_weight_decay));
    const at::Tensor slice = sharding_.local_parameters();
    if (offload) {
        offloaded_ = std::make_unique<OffloadedAdamWState>(slice, *offload, rank);
        return;
    }
    master_ = slice;
    exp_avg_ = at::zeros_like(master_);
    exp_avg_sq_ = at::zeros_like(master_);
    decay_.for_each_run(0, master_.numel(), [&](int64_t begin, int64_t end, bool decays) {
        runs_.push_back({begin, end, decays, options_.fused ? at::zeros({}, master_.options()) : at::Tensor()});
    });
}

std::string PartitionedAdamW::placement() const { return offloaded_ ? offloaded_->describe() : "device memory"; }

PartitionedAdamW::StepResult PartitionedAdamW::step(double lr, double max_grad_norm, optim::LossScaler* scaler) {
    at::NoGradGuard no_grad;
    const at::TensorOptions fp32 = sharding_.options();
    // 1. this rank's slice of the gradients summed over ranks
    at::Tensor grad = sharding_.reduced_gradients();
    // 2. fp16: unscale; any rank's overflow skips the step on all of them
    StepResult result;
    if (scaler) {
        std::vector<at::Tensor> slice{grad};
        const bool finite_here = scaler->unscale(slice);
        at::Tensor overflow = at::full({1}, finite_here ? 0.0f : 1.0f, fp32);
        if (comm_) comm_->all_reduce(overflow, dist::ReduceOp::kMax);
        if (overflow.item<float>() != 0.0f) {
            if (finite_here) scaler->mark_overflow();
            result.grad_norm = at::full({}, std::nan(""), fp32.dtype(at::kDouble));
            return result;
        }
    }
    // 3. the global norm, clipped as clip_grad_norm_ does
    at::Tensor squares = grad.to(at::kDouble).pow(2).sum().reshape({1});
    if (comm_) comm_->all_reduce(squares, dist::ReduceOp::kSum);
    // On the device, so that nothing waits for it: the coefficient in double (as a host double
    // would be), applied in fp32 (as a host scalar would be).
    result.grad_norm = squares.sqrt().reshape({});
    if (max_grad_norm > 0) grad.mul_(at::clamp_max(max_grad_norm / (result.grad_norm + 1e-6), 1.0).to(at::kFloat));
    // 4. AdamW on the slice (optim::AdamW's update)
    ++step_;
    at::Tensor updated = master_;
    if (offloaded_) {
        updated = at::empty({sharding_.local_numel()}, fp32);
        offloaded_->step(grad, updated, step_, lr, options_, decay_);
    } else if (options_.fused) {  // the client optimizer DeepSpeed steps on its partition: torch's fused AdamW, per group
        for (const bool decays : {true, false}) {
            std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
            for (const Run& run : runs_) {
                if (run.decays != decays) continue;
                const int64_t n = run.end - run.begin;
                params.push_back(master_.narrow(0, run.begin, n));
                grads.push_back(grad.narrow(0, run.begin, n));
                exp_avgs.push_back(exp_avg_.narrow(0, run.begin, n));
                exp_avg_sqs.push_back(exp_avg_sq_.narrow(0, run.begin, n));
                steps.push_back(run.step_count);
            }
            if (!params.empty())
                optim::fused_adamw_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr,
                                          decays ? options_ : optim::without_decay(options_));
        }
    } else {
        for (const Run& run : runs_) {
            const int64_t n = run.end - run.begin;
            at::Tensor param = master_.narrow(0, run.begin, n), avg = exp_avg_.narrow(0, run.begin, n);
            at::Tensor avg_sq = exp_avg_sq_.narrow(0, run.begin, n);
            optim::adamw_update(param, grad.narrow(0, run.begin, n), avg, avg_sq, step_, lr,
                                run.decays ? options_ : optim::without_decay(options_));
        }
    }
    // 5. the updated slice into the parameters
    sharding_.write_parameters(updated);
    result.stepped = true;
    return result;
}

void PartitionedAdamW::zero_grad() { sharding_.zero_grad(); }

PartitionedAdamW::NamedTensors PartitionedAdamW::state() const {
    const at::Device device = sharding_.options().device();
    at::Tensor mine = exp_avg_, mine_sq = exp_avg_sq_;
    if (offloaded_) {
        const auto all = offloaded_->read_all();
        mine = all[OffloadedAdamWState::kExpAvg].to(device);
        mine_sq = all[OffloadedAdamWState::kExpAvgSq].to(device);
    }
    NamedTensors out;
    for (auto& [name, m] : sharding_.whole(mine)) out.emplace_back("exp_avg." + name, std::move(m));
    for (auto& [name, v] : sharding_.whole(mine_sq)) out.emplace_back("exp_avg_sq." + name, std::move(v));
    out.emplace_back("step", at::scalar_tensor(static_cast<double>(step_), at::kDouble));
    return out;
}

void PartitionedAdamW::load_state(const NamedTensors& state) {
    const std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    at::NoGradGuard no_grad;
    const at::Tensor avg = sharding_.local_of(by_name, "exp_avg.", "optimizer state");
    const at::Tensor avg_sq = sharding_.local_of(by_name, "exp_avg_sq.", "optimizer state");
    const at::Tensor master = sharding_.local_parameters();  // the restored weights
    if (offloaded_) {
        offloaded_->write_all(master, avg, avg_sq);
    } else {
        exp_avg_.copy_(avg);
        exp_avg_sq_.copy_(avg_sq);
        master_.copy_(master);
    }
    const auto it = by_name.find("step");
    if (it == by_name.end()) fail(ErrorKind::kConfig, "optimizer state: missing 'step'");
    step_ = static_cast<int64_t>(it->second.item<double>());
    for (Run& run : runs_)
        if (run.step_count.defined()) run.step_count.fill_(static_cast<double>(step_));
}

}  // namespace ftl::zero
