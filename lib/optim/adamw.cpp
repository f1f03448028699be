#include "optim/adamw.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::optim {

AdamWOptions without_decay(AdamWOptions options) {
    options.weight_decay = 0.0;
    return options;
}

bool exempt_from_weight_decay(const std::string& name) {
    const std::string n = to_lower(name);
    auto has = [&](const char* part) { return n.find(part) != std::string::npos; };
    // (?:^|\.)norm(?:$|\.) and _norm(?:$|\.)
    auto norm_at = [&](const std::string& word) {
        for (size_t at = n.find(word); at != std::string::npos; at = n.find(word, at + 1)) {
            const size_t end = at + word.size();
            const bool starts = word[0] == '_' || at == 0 || n[at - 1] == '.';
            if (starts && (end == n.size() || n[end] == '.')) return true;
        }
        return false;
    };
    return has("bias") || has("layernorm") || has("rmsnorm") || norm_at("norm") || norm_at("_norm");
}

void DecayMask::for_each_run(int64_t begin, int64_t end, const std::function<void(int64_t, int64_t, bool)>& fn) const {
    int64_t at = begin;
    for (const auto& [exempt_begin, exempt_end] : exempt_) {
        if (exempt_end <= at) continue;
        if (exempt_begin >= end) break;
        if (exempt_begin > at) fn(at, exempt_begin, true);
        const int64_t stop = std::min(exempt_end, end);
        fn(std::max(at, exempt_begin), stop, false);
        at = stop;
    }
    if (at < end) fn(at, end, true);
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options, bool trainer_groups)
    : params_(std::move(params)), options_(options) {
    for (const auto& [name, p] : params_) {
        decays_.push_back(!trainer_groups || !exempt_from_weight_decay(name));
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
    if (options_.fused) {  // per group, the tensors with gradients, as torch.optim.AdamW(fused=True) takes them
        for (const bool decays : {true, false}) {
            std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
            for (size_t i = 0; i < params_.size(); ++i) {
                const at::Tensor& p = params_[i].second;
                if (!p.grad().defined() || decays_[i] != decays) continue;
                params.push_back(p);
                grads.push_back(p.grad());
                exp_avgs.push_back(exp_avg_[i]);
                exp_avg_sqs.push_back(exp_avg_sq_[i]);
                steps.push_back(step_counts_[i]);
            }
            if (!params.empty())
                fused_adamw_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, decays ? options_ : without_decay(options_));
        }
        return;
    }
    for (size_t i = 0; i < params_.size(); ++i) {
        at::Tensor& p = params_[i].second;
        if (!p.grad().defined()) continue;
        adamw_update(p, p.grad(), exp_avg_[i], exp_avg_sq_[i], step_, lr, decays_[i] ? options_ : without_decay(options_));
    }
}

void clear_gradients(std::vector<std::pair<std::string, at::Tensor>>& params) {
    for (auto& [name, p] : params)
        if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

void AdamW::zero_grad() { clear_gradients(params_); }

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
