#include "optim/loss_scaler.h"

#include <map>

#include "util/error.h"

namespace ftl::optim {

LossScaler::LossScaler(LossScalerOptions options, const at::Device& device) : options_(options) {
    const auto on_device = at::TensorOptions().device(device);
    scale_ = at::full({1}, options_.init_scale, on_device.dtype(at::kFloat));
    growth_tracker_ = at::zeros({1}, on_device.dtype(at::kInt));
    found_inf_ = at::zeros({1}, on_device.dtype(at::kFloat));
    hysteresis_left_ = options_.hysteresis;
}

double LossScaler::scale() const { return scale_.item<double>(); }

at::Tensor LossScaler::scaled(const at::Tensor& loss) const { return loss * scale_.to(loss.scalar_type()); }

bool LossScaler::unscale(std::vector<at::Tensor>& grads) {
    // GradScaler: inv_scale = scale.double().reciprocal().float()
    const at::Tensor inv_scale = scale_.to(at::kDouble).reciprocal().to(at::kFloat);
    found_inf_.zero_();
    if (!grads.empty()) at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, inv_scale);
    return found_inf_.item<float>() == 0.0f;
}

void LossScaler::update() {
    if (options_.policy == LossScalePolicy::kStatic) return;
    if (options_.policy == LossScalePolicy::kDeepSpeed) {
        update_deepspeed(found_inf_.item<float>() != 0.0f);
        return;
    }
    at::_amp_update_scale_(scale_, growth_tracker_, found_inf_, options_.growth_factor, options_.backoff_factor,
                           options_.growth_interval);
}

// deepspeed/runtime/fp16/loss_scaler.py, DynamicLossScaler.update_scale (consecutive_hysteresis off).
void LossScaler::update_deepspeed(bool overflow) {
    const double scale = this->scale();
    if (overflow) {
        if (options_.hysteresis == 1 || hysteresis_left_ == 1) {
            if (scale == options_.min_scale)
                fail(ErrorKind::kConfig, "fp16: the loss scale is already at min_loss_scale " +
                                             std::to_string(options_.min_scale) +
                                             " and the gradients still overflow (as DeepSpeed, stopping; try bf16)");
            scale_.fill_(std::max(scale / options_.growth_factor, options_.min_scale));
        } else {
            --hysteresis_left_;
        }
        last_overflow_iteration_ = iteration_;
    } else if ((iteration_ - last_overflow_iteration_) % options_.growth_interval == 0) {
        hysteresis_left_ = options_.hysteresis;
        scale_.fill_(scale * options_.growth_factor);
    }
    ++iteration_;
}

std::vector<std::pair<std::string, at::Tensor>> LossScaler::state() const {
    const auto counters = at::tensor({iteration_, last_overflow_iteration_, static_cast<int64_t>(hysteresis_left_)});
    return {{"loss_scale", scale_.cpu()},
            {"loss_scale_growth_tracker", growth_tracker_.cpu()},
            {"loss_scale_counters", counters}};
}

void LossScaler::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
    const std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    for (auto [name, into] : {std::pair{"loss_scale", scale_}, std::pair{"loss_scale_growth_tracker", growth_tracker_}}) {
        const auto it = by_name.find(name);
        if (it == by_name.end())
            fail(ErrorKind::kConfig, std::string("optimizer state: missing '") + name +
                                         "' (the checkpoint was not written by an --fp16 run)");
        into.copy_(it->second.reshape({1}));
    }
    if (const auto it = by_name.find("loss_scale_counters"); it != by_name.end() && it->second.numel() == 3) {
        const at::Tensor counters = it->second.to(at::kLong);
        iteration_ = counters[0].item<int64_t>();
        last_overflow_iteration_ = counters[1].item<int64_t>();
        hysteresis_left_ = static_cast<int>(counters[2].item<int64_t>());
    }
}

}  // namespace ftl::optim
