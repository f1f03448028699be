// AdamW (Loshchilov & Hutter 2019) with torch.optim.AdamW's update, step by step:
//   p <- p * (1 - lr * weight_decay)
//   m <- beta1 * m + (1 - beta1) * g;  v <- beta2 * v + (1 - beta2) * g^2
//   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State (m, v, step) lives next to each parameter in fp32, like the parameters it updates.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace ftl::optim {

struct AdamWOptions {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    // AdamW::step runs ATen's multi-tensor kernel (torch.optim.AdamW(fused=True): what the HF
    // Trainer's default optim "adamw_torch_fused" runs; one launch for all tensors on a GPU) instead
    // of the per-tensor update above. The same formula; roundings may differ in the last bit.
    bool fused = false;
};

// One AdamW update of `param` in place with gradient `grad` and moments `exp_avg`,
// `exp_avg_sq` (updated in place), at 1-based step `step` (for the bias corrections).
void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                  int64_t step, double lr, const AdamWOptions& options);

// The same update through ATen's multi-tensor kernel, as torch.optim.AdamW(fused=True) calls it:
// `steps` (each tensor's step count, a float32 scalar tensor on its device) advance by one first.
void fused_adamw_update(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                        const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                        const std::vector<at::Tensor>& steps, double lr, const AdamWOptions& options);

class AdamW {
public:
    // `params`: (name, fp32 tensor with .grad()) pairs; names key the saved state.
    AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options);

    // One update with learning rate `lr` on every parameter that has a gradient.
    void step(double lr);
    void zero_grad();
    int64_t steps() const { return step_; }

    // exp_avg.<name>, exp_avg_sq.<name> and "step" as tensors, for checkpoints.
    std::vector<std::pair<std::string, at::Tensor>> state() const;
    // Restores what state() returned; throws naming the missing or misshapen entry.
    void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state);

private:
    std::vector<std::pair<std::string, at::Tensor>> params_;
    std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
    std::vector<at::Tensor> step_counts_;  // fused: each tensor's step, fp32 on its device (as torch keeps it)
    AdamWOptions options_;
    int64_t step_ = 0;
};

}  // namespace ftl::optim
