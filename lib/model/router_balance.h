// The router's load-balancing loss of a mixture-of-experts model, as TRL's SFTTrainer adds it
// (router_aux_loss_coef != 0; transformers' load_balancing_loss_func, Switch Transformer
// eqs. 4-6, Fedus et al. 2021). Over the R rows (MoE layer, real token) of one forward:
//   f_e = (1/R) · #{rows whose top-k (of softmax(router logits)) holds e}   (no gradient)
//   P_e = (1/R) · Σ_rows softmax(router logits)_e
//   aux = E · Σ_e f_e P_e
// Padding rows (the batch's attention mask) are left out. Since f carries no gradient,
// ∂aux/∂p_{row,e} = E f_e / R for a real row: a constant per expert, known only once every layer
// has run. So each layer only counts in forward, and its output carries that gradient into the
// router's probabilities in backward (`carry_gradient`), which works unchanged when a layer is
// recomputed in backward (model/recompute.h), for the constant is set before backward starts.
#pragma once

#include <ATen/ATen.h>

#include <memory>

namespace ftl::model {

class RouterBalance {
public:
    // `coefficient`: router_aux_loss_coef, the loss's weight in the training loss (TRL's SFTTrainer
    // adds coefficient · aux to each micro-batch's loss, divided by the accumulation steps).
    RouterBalance(int64_t num_experts, int64_t top_k, double coefficient);
    double coefficient() const { return coefficient_; }

    // A new forward over a batch: `row_mask` [N] (1 = real token; undefined: every row is) and
    // `real_rows` its sum.
    void start_batch(const at::Tensor& row_mask, double real_rows);
    // One MoE layer's router probabilities [N, E] (softmax of its logits in their type, then fp32):
    // adds its rows' top-k choices and probabilities. Not called when the layer is recomputed.
    void add_layer(const at::Tensor& probs);
    // aux of the forward so far, an fp32 scalar without gradient.
    at::Tensor loss() const;
    // ∂(the loss backward starts from)/∂aux, before that backward: each layer's probabilities then
    // receive weight · E f_e / R per real row, times `loss_scale` (fp16's, a device scalar) if defined.
    void set_loss_weight(double weight, const at::Tensor& loss_scale = {});
    // A copy of `output` (the layer's routing weights [N, k], small) whose backward also gives
    // `probs` the gradient set_loss_weight fixes; `output` itself outside grad mode or when
    // `probs` needs no gradient.
    at::Tensor carry_gradient(const at::Tensor& output, const at::Tensor& probs) const;

private:
    int64_t experts_, top_k_;
    double coefficient_;
    at::Tensor mask_;                          // [N] fp32, or undefined
    double real_rows_ = 0.0;                   // real rows of one layer
    int64_t layers_ = 0;
    at::Tensor counts_, probability_sums_;     // [E] fp32 over the layers so far
    std::shared_ptr<at::Tensor> row_gradient_; // [E] fp32, read in backward
};

}  // namespace ftl::model
