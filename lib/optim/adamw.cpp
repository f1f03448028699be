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

void AdamW::step(double lr) {
    at::NoGradGuard no_grad;
    ++step_;
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
}

}  // namespace ftl::optim
