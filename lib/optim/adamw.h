// AdamW (Loshchilov & Hutter 2019) with torch.optim.AdamW's update, step by step:
//   p <- p * (1 - lr * weight_decay)
//   m <- beta1 * m + (1 - beta1) * g;  v <- beta2 * v + (1 - beta2) * g^2
//   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State (m, v, step) lives next to each parameter in fp32, like the parameters it updates.
#pragma once

#include <ATen/ATen.h>

#include <functional>
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

// The same options with weight_decay 0 (the HF Trainer's second parameter group).
AdamWOptions without_decay(AdamWOptions options);

// The HF Trainer's rule for its second parameter group (Trainer.get_decay_parameter_names): a
// parameter whose lower-cased name matches bias, layernorm, rmsnorm, (^|.)norm($|.) or
// _norm($|.) gets no weight decay. LoRA's adapters never match; a full fine-tune's norms do.
bool exempt_from_weight_decay(const std::string& name);

// Where weight decay applies in a flat vector of trained elements (a ZeRO slice): everywhere but
// the `exempt` ranges [begin, end) (sorted, disjoint).
class DecayMask {
public:
    DecayMask() = default;
    explicit DecayMask(std::vector<std::pair<int64_t, int64_t>> exempt) : exempt_(std::move(exempt)) {}
    // fn(begin, end, decays) over consecutive runs covering [begin, end), in order.
    void for_each_run(int64_t begin, int64_t end, const std::function<void(int64_t, int64_t, bool)>& fn) const;

private:
    std::vector<std::pair<int64_t, int64_t>> exempt_;
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

// Drops the gradient of every tensor in `params` (zero_grad(set_to_none=True)).
void clear_gradients(std::vector<std::pair<std::string, at::Tensor>>& params);

class AdamW {
public:
    // `params`: (name, fp32 tensor with .grad()) pairs; names key the saved state. With
    // `trainer_groups`, the parameters exempt_from_weight_decay names step with weight_decay 0.
    AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options, bool trainer_groups = false);

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
    std::vector<bool> decays_;             // per parameter: weight decay applies
    AdamWOptions options_;
    int64_t step_ = 0;
};

}  // namespace ftl::optim
