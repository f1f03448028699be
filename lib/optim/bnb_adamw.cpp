#include "optim/bnb_adamw.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>

#include "util/error.h"

namespace ftl::optim {

bool keeps_32bit_state(const std::string& name) { return name.find("embed_tokens") != std::string::npos; }

BnbAdamW::BnbAdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options, bool trainer_groups,
                   bool eight_bit)
    : params_(std::move(params)), options_(options) {
    for (const auto& [name, p] : params_) {
        decays_.push_back(!trainer_groups || !exempt_from_weight_decay(name));
        Moments m;
        if (eight_bit && p.numel() >= kMin8bitSize && !keeps_32bit_state(name)) {
            if (!signed_code_) {
                signed_code_.emplace(quant::dynamic_map(true), kBlocksize, p.device());
                unsigned_code_.emplace(quant::dynamic_map(false), kBlocksize, p.device());
            }
            m.state1 = at::zeros(p.sizes(), p.options().dtype(at::kByte));
            m.state2 = at::zeros(p.sizes(), p.options().dtype(at::kByte));
            m.absmax1 = at::zeros({signed_code_->blocks(p.numel())}, p.options().dtype(at::kFloat));
            m.absmax2 = at::zeros_like(m.absmax1);
        } else {
            m.state1 = at::zeros_like(p, at::MemoryFormat::Contiguous);
            m.state2 = at::zeros_like(p, at::MemoryFormat::Contiguous);
        }
        moments_.push_back(std::move(m));
    }
}

// backends/cpu/ops.py _optimizer_update_32bit_cpu, "adam" (gnorm_scale 1, no max_unorm).
void BnbAdamW::update_32bit(at::Tensor& p, const at::Tensor& grad, Moments& m, double lr, double weight_decay) const {
    const double t = static_cast<double>(step_);
    m.state1.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    m.state2.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const double correction1 = 1.0 - std::pow(options_.beta1, t);
    const double correction2 = std::sqrt(1.0 - std::pow(options_.beta2, t));
    const double step_size = -lr * correction2 / correction1;
    if (weight_decay > 0.0) p.mul_(1.0 - lr * weight_decay);
    const at::Tensor update = m.state1 / (m.state2.sqrt() + options_.eps * correction2);
    p.add_(update, step_size);
}

// backends/cpu/ops.py _optimizer_update_8bit_blockwise_cpu, "adam".
void BnbAdamW::update_8bit(at::Tensor& p, const at::Tensor& grad, Moments& m, double lr, double weight_decay) const {
    const double t = static_cast<double>(step_);
    at::Tensor state1 = signed_code_->dequantize(m.state1, m.absmax1);
    at::Tensor state2 = unsigned_code_->dequantize(m.state2, m.absmax2);
    state1.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    state2.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const double correction1 = 1.0 - std::pow(options_.beta1, t);
    const double correction2 = std::sqrt(1.0 - std::pow(options_.beta2, t));
    const at::Tensor denom = (state2.sqrt() / correction2).add_(options_.eps);
    if (weight_decay > 0.0) p.mul_(1.0 - lr * weight_decay);
    p.addcdiv_(state1, denom, -lr / correction1);
    signed_code_->quantize(state1, m.state1, m.absmax1);
    unsigned_code_->quantize(state2, m.state2, m.absmax2);
}

void BnbAdamW::step(double lr) {
    at::NoGradGuard no_grad;
    ++step_;
    for (size_t i = 0; i < params_.size(); ++i) {
        at::Tensor& p = params_[i].second;
        if (!p.grad().defined()) continue;
        const at::Tensor grad = p.grad().to(at::kFloat).contiguous();
        const double weight_decay = decays_[i] ? options_.weight_decay : 0.0;
        if (moments_[i].eight_bit()) update_8bit(p, grad, moments_[i], lr, weight_decay);
        else update_32bit(p, grad, moments_[i], lr, weight_decay);
    }
}

void BnbAdamW::zero_grad() { clear_gradients(params_); }

std::vector<std::pair<std::string, at::Tensor>> BnbAdamW::state() const {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (size_t i = 0; i < params_.size(); ++i) {
        const std::string& name = params_[i].first;
        const Moments& m = moments_[i];
        out.emplace_back("state1." + name, m.state1);
        out.emplace_back("state2." + name, m.state2);
        if (m.eight_bit()) {
            out.emplace_back("absmax1." + name, m.absmax1);
            out.emplace_back("absmax2." + name, m.absmax2);
        }
    }
    out.emplace_back("step", at::scalar_tensor(static_cast<double>(step_), at::kDouble));
    return out;
}

void BnbAdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
    std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    auto take = [&](const std::string& name, at::Tensor& into) {
        auto it = by_name.find(name);
        if (it == by_name.end())
            fail(ErrorKind::kConfig, "optimizer state: missing '" + name + "' (was the checkpoint written with another --optim?)");
        if (it->second.sizes() != into.sizes() || it->second.scalar_type() != into.scalar_type())
            fail(ErrorKind::kConfig, "optimizer state: '" + name + "' has the wrong shape or type for this model and --optim");
        into.copy_(it->second);
    };
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
        const std::string& name = params_[i].first;
        Moments& m = moments_[i];
        take("state1." + name, m.state1);
        take("state2." + name, m.state2);
        if (m.eight_bit()) {
            take("absmax1." + name, m.absmax1);
            take("absmax2." + name, m.absmax2);
        }
    }
    auto it = by_name.find("step");
    if (it == by_name.end()) fail(ErrorKind::kConfig, "optimizer state: missing 'step'");
    step_ = static_cast<int64_t>(it->second.item<double>());
}

}  // namespace ftl::optim
