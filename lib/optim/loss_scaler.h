// Dynamic loss scaling for fp16 training (Micikevicius et al. 2018), as torch.amp.GradScaler does
// it under HF Trainer's --fp16: the loss is multiplied by `scale` before backward so small fp16
// gradients do not flush to zero; the gradients are divided by it before clipping; a step whose
// gradients hold inf/NaN is skipped (the optimizer and the LR schedule do not advance) and the
// scale halves; after `growth_interval` finite steps in a row it doubles. Uses GradScaler's own
// ATen kernels (_amp_foreach_non_finite_check_and_unscale_, _amp_update_scale_).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace ftl::optim {

struct LossScalerOptions {
    double init_scale = 65536.0;  // 2^16, GradScaler's default
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    int64_t growth_interval = 2000;
};

class LossScaler {
public:
    LossScaler(LossScalerOptions options, const at::Device& device);

    double scale() const;
    at::Tensor scaled(const at::Tensor& loss) const;  // loss * scale, for backward
    // Divides every gradient by the scale in place; true when they are all finite.
    bool unscale(std::vector<at::Tensor>& grads);
    // Records an overflow found elsewhere (another rank's gradients) for the next update().
    void mark_overflow() { found_inf_.fill_(1.0); }
    // After the step (taken or skipped): backs off after a non-finite step, grows after
    // growth_interval finite ones.
    void update();

    // "loss_scale" and "loss_scale_growth_tracker", for checkpoints; load_state restores them.
    std::vector<std::pair<std::string, at::Tensor>> state() const;
    void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state);

private:
    LossScalerOptions options_;
    at::Tensor scale_;           // [1] fp32 on the device
    at::Tensor growth_tracker_;  // [1] int32: finite steps since the last change
    at::Tensor found_inf_;       // [1] fp32: 1 when the last unscale met inf/NaN
};

}  // namespace ftl::optim
