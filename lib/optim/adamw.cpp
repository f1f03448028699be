#include "optim/adamw.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>

#include "util/error.h"

namespace ftl::optim {

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
    for (const auto& [name, p] : params_) {
        exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
        exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
        if (options_.fused) step_counts_.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
    }
}

void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                  int64_t step, double lr, const AdamWOptions& options) {
    const double step_size = lr / (1.0 - std::pow(options.beta1, static_cast<double>(step)));
    const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(options.beta2, static_cast<double>(step)));
    param.mul_(1.0 - lr * options.weight_decay);
    exp_avg.lerp_(grad, 1.0 - options.beta1);
    exp_avg_sq.mul_(options.beta2).addcmul_(grad, grad, 1.0 - options.beta2);
    at::Tensor denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options.eps);
    param.addcdiv_(exp_avg, denom, -step_size);
}

void fused_adamw_update(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                        const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                        const std::vector<at::Tensor>& steps, double lr, const AdamWOptions& options) {
    at::NoGradGuard no_grad;
    at::_foreach_add_(steps, 1.0);
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr, options.beta1, options.beta2,
                      options.weight_decay, options.eps, /*amsgrad=*/false, /*maximize=*/false);
}

void AdamW::step(double lr) {
    at::NoGradGuard no_grad;
    ++step_;
    if (options_.fused) {  // the tensors with gradients, as torch.optim.AdamW(fused=True) takes them
        std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
        for (size_t i = 0; i < params_.size(); ++i) {
            const at::Tensor& p = params_[i].second;
            if (!p.grad().defined()) continue;
            params.push_back(p);
            grads.push_back(p.grad());
            exp_avgs.push_back(exp_avg_[i]);
            exp_avg_sqs.push_back(exp_avg_sq_[i]);
            steps.push_back(step_counts_[i]);
        }
        if (!params.empty()) fused_adamw_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, options_);
        return;
    }
    for (size_t i = 0; i < params_.size(); ++i) {
        at::Tensor& p = params_[i].second;
        if (!p.grad().defined()) continue;
        adamw_update(p, p.grad(), exp_avg_[i], exp_avg_sq_[i], step_, lr, options_);
    }
}

void AdamW::zero_grad() {
    for (auto& [name, p] : params_)
        if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (size_t i = 0; i < params_.size(); ++i) {
        out.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
        out.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
    }
    out.emplace_back("step", at::scalar_tensor(static_cast<double>(step_), at::kDouble));
    return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
    std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    auto take = [&](const std::string& name, at::Tensor& into) {
        auto it = by_name.find(name);
        if (it == by_name.end()) fail(ErrorKind::kConfig, "optimizer state: missing '" + name + "'");
        if (it->second.sizes() != into.sizes())
            fail(ErrorKind::kConfig, "optimizer state: '" + name + "' has the wrong shape for this model");
        into.copy_(it->second);
    };
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
        take("exp_avg." + params_[i].first, exp_avg_[i]);
        take("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
    }
    auto it = by_name.find("step");
    if (it == by_name.end()) fail(ErrorKind::kConfig, "optimizer state: missing 'step'");
    step_ = static_cast<int64_t>(it->second.item<double>());
    for (at::Tensor& count : step_counts_) count.fill_(static_cast<double>(step_));
}

}  // namespace ftl::optim
