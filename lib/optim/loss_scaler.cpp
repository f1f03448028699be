#include "optim/loss_scaler.h"

#include <map>

#include "util/error.h"

namespace ftl::optim {

LossScaler::LossScaler(LossScalerOptions options, const at::Device& device) : options_(options) {
    const auto on_device = at::TensorOptions().device(device);
    scale_ = at::full({1}, options_.init_scale, on_device.dtype(at::kFloat));
    growth_tracker_ = at::zeros({1}, on_device.dtype(at::kInt));
    found_inf_ = at::zeros({1}, on_device.dtype(at::kFloat));
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
    at::_amp_update_scale_(scale_, growth_tracker_, found_inf_, options_.growth_factor, options_.backoff_factor,
                           options_.growth_interval);
}

std::vector<std::pair<std::string, at::Tensor>> LossScaler::state() const {
    return {{"loss_scale", scale_.cpu()}, {"loss_scale_growth_tracker", growth_tracker_.cpu()}};
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
}

}  // namespace ftl::optim
