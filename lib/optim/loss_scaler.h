// Dynamic loss scaling for fp16 training (Micikevicius et al. 2018): the loss is multiplied by
// `scale` before backward so small fp16 gradients do not flush to zero; the gradients are divided
// by it before clipping; a step whose gradients hold inf/NaN is skipped (the optimizer and the LR
// schedule do not advance). How the scale moves follows whoever scales the loss in the HF stack:
//   - kGradScaler (HF Trainer's --fp16 without DeepSpeed: torch.amp.GradScaler): x backoff after
//     an overflow, x growth after growth_interval finite steps in a row; GradScaler's own ATen
//     kernels (_amp_foreach_non_finite_check_and_unscale_, _amp_update_scale_);
//   - kDeepSpeed (a DeepSpeed config's fp16 block with loss_scale 0: DynamicLossScaler): an
//     overflow first uses up `hysteresis` (reset when the scale grows), then divides the scale by
//     growth_factor down to min_scale (an overflow at min_scale is an error, as in DeepSpeed);
//     the scale grows when (iteration - last overflow iteration) % growth_interval == 0;
//   - kStatic (DeepSpeed loss_scale > 0): a fixed scale; overflow steps are still skipped.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace ftl::optim {

enum class LossScalePolicy { kGradScaler, kDeepSpeed, kStatic };

struct LossScalerOptions {
    LossScalePolicy policy = LossScalePolicy::kGradScaler;
    double init_scale = 65536.0;  // 2^16, GradScaler's default (DeepSpeed: 2^initial_scale_power)
    double growth_factor = 2.0;   // DeepSpeed: scale_factor, also the divisor after an overflow
    double backoff_factor = 0.5;  // GradScaler only
    int64_t growth_interval = 2000;  // DeepSpeed: loss_scale_window
    int hysteresis = 2;              // DeepSpeed only (delayed_shift)
    double min_scale = 1.0;          // DeepSpeed only (min_loss_scale)
};

class LossScaler {
public:
    LossScaler(LossScalerOptions options, const at::Device& device);

    double scale() const;
    const at::Tensor& scale_tensor() const { return scale_; }  // the same, on the device (no read)
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
    void update_deepspeed(bool overflow);

    LossScalerOptions options_;
    // DynamicLossScaler's counters (kDeepSpeed)
    int64_t iteration_ = 0;
    int64_t last_overflow_iteration_ = -1;
    int hysteresis_left_ = 0;
    at::Tensor scale_;           // [1] fp32 on the device
    at::Tensor growth_tracker_;  // [1] int32: finite steps since the last change
    at::Tensor found_inf_;       // [1] fp32: 1 when the last unscale met inf/NaN
};

}  // namespace ftl::optim
