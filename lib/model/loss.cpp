#include "model/loss.h"

#include <torch/csrc/autograd/custom_function.h>

#include "util/error.h"

namespace ftl::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Outputs {loss, stats}: stats [2] = (summed entropy, argmax hits), not differentiable.
struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
    static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                              const at::Tensor& targets, int64_t chunk_rows, double divisor, double logits_scaling,
                              double softcap, bool dft) {
        const bool want_hidden_grad = hidden.requires_grad();
        const bool want_weight_grad = weight.requires_grad();
        const int64_t rows = hidden.size(0);
        at::Tensor total = at::zeros({}, hidden.options().dtype(at::kFloat));
        at::Tensor stats = at::zeros({2}, hidden.options().dtype(at::kFloat));
        at::Tensor grad_hidden = want_hidden_grad ? at::empty_like(hidden) : at::Tensor();
        at::Tensor grad_weight = want_weight_grad ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat))
                                                  : at::Tensor();
        for (int64_t begin = 0; begin < rows; begin += chunk_rows) {
            const int64_t n = std::min(chunk_rows, rows - begin);
            at::Tensor h = hidden.narrow(0, begin, n);
            at::Tensor t = targets.narrow(0, begin, n).unsqueeze(1);
            at::Tensor logits = at::matmul(h, weight.t());  // [n, V]
            // granite divides the logits in the model's type, before the loss upcasts them.
            if (logits_scaling != 1.0) logits = logits / logits_scaling;
            // gemma2 caps them, also in the model's type: cap * tanh(logits / cap).
            at::Tensor capped_tanh;
            if (softcap > 0.0) {
                capped_tanh = at::tanh(logits / softcap);
                logits = capped_tanh * softcap;
            }
            logits = logits.to(at::kFloat);
            at::Tensor lse = at::logsumexp(logits, 1, /*keepdim=*/true);
            const at::Tensor nll = lse - logits.gather(1, t);  // [n, 1]
            // DFT: the row's target probability, a constant weight on its loss and gradient.
            const at::Tensor target_probability = dft ? at::exp(-nll) : at::Tensor();
            total += (dft ? nll * target_probability : nll).sum();
            // entropy = lse - sum_v p_v logit_v; a hit when the target is the argmax.
            at::Tensor probabilities = (logits - lse).exp_();
            stats[0] += (lse.squeeze(1) - (probabilities * logits).sum(1)).sum();
            stats[1] += (logits.argmax(1, /*keepdim=*/true) == t).sum().to(at::kFloat);
            if (!want_hidden_grad && !want_weight_grad) continue;
            // d(lse - logit_t)/d logits = softmax - onehot(t)
            at::Tensor grad_logits = std::move(probabilities);
            grad_logits.scatter_add_(1, t, at::full({n, 1}, -1.0f, grad_logits.options()));
            if (dft) grad_logits.mul_(target_probability);
            // d(cap * tanh(z / cap))/dz = 1 - tanh(z / cap)^2
            if (capped_tanh.defined()) grad_logits.mul_(1.0 - capped_tanh.to(at::kFloat).square());
            if (logits_scaling != 1.0) grad_logits.div_(logits_scaling);
            at::Tensor g = grad_logits.to(hidden.scalar_type());
            if (want_hidden_grad) grad_hidden.narrow(0, begin, n).copy_(at::matmul(g, weight));
            if (want_weight_grad) grad_weight.add_(at::matmul(g.t(), h).to(at::kFloat));
        }
        ctx->saved_data["divisor"] = divisor;
        ctx->save_for_backward({grad_hidden, grad_weight});
        ctx->mark_non_differentiable({stats});
        return {total / divisor, stats};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const double divisor = ctx->saved_data["divisor"].toDouble();
        auto saved = ctx->get_saved_variables();
        at::Tensor scale = grad_outputs[0] / divisor;  // fp32 scalar
        at::Tensor grad_hidden, grad_weight;
        if (saved[0].defined()) grad_hidden = (saved[0].to(at::kFloat) * scale).to(saved[0].scalar_type());
        if (saved[1].defined()) grad_weight = saved[1] * scale;
        return {grad_hidden, grad_weight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> chunked_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& lm_head,
                                                               const at::Tensor& targets, int64_t chunk_rows,
                                                               double divisor, double logits_scaling,
                                                               std::optional<double> softcap, TokenLoss token_loss) {
    if (chunk_rows <= 0) fail(ErrorKind::kInternal, "chunked_linear_cross_entropy: chunk_rows must be > 0");
    const variable_list out = LinearCrossEntropy::apply(hidden, lm_head, targets, chunk_rows, divisor, logits_scaling,
                                                        softcap.value_or(0.0), token_loss == TokenLoss::kDft);
    return {out[0], out[1]};
}

int64_t loss_chunk_rows(int64_t vocab_size) {
    constexpr int64_t kLogitsBytes = int64_t{128} << 20;
    return std::max<int64_t>(64, kLogitsBytes / (4 * std::max<int64_t>(1, vocab_size)));
}

LossResult causal_lm_loss(const CausalLM& model, const Batch& batch, const LossOptions& options,
                          const ForwardOptions& forward) {
    if (!batch.labels.defined()) fail(ErrorKind::kInternal, "causal_lm_loss: the batch has no labels");
    // Position t predicts label t+1; the last position of each row predicts nothing.
    at::Tensor counted = batch.target_positions, targets = batch.target_ids;
    if (!counted.defined()) {
        at::Tensor shifted = at::cat({batch.labels.narrow(1, 1, batch.labels.size(1) - 1),
                                      at::full({batch.labels.size(0), 1}, kIgnoreIndex, batch.labels.options())},
                                     1)
                                 .reshape({-1});
        counted = (shifted != kIgnoreIndex).nonzero().squeeze(1);
        targets = shifted.index_select(0, counted);
    }
    const int64_t count = counted.size(0);
    at::Tensor hidden = model.hidden_states(batch, forward);  // [B, T, H]
    at::Tensor rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, counted);
    const double divisor = options.divisor ? *options.divisor : static_cast<double>(count);
    // Acquired before the early return: under ZeRO-3 acquiring is a collective every rank makes.
    const AcquiredPart head(forward, WeightResidency::kHead);
    if (forward.progress) forward.progress("forward of lm_head and the loss");
    if (count == 0 || divisor == 0.0) {
        // Nothing to predict: a zero that still reaches every weight (the head included), so that
        // every rank's backward finishes the same tensors (ZeRO's overlapped reductions start
        // from their gradients).
        const at::Tensor first = hidden.reshape({-1, hidden.size(-1)}).narrow(0, 0, 1);
        return {at::linear(first, model.weights().lm_head).sum().to(at::kFloat) * 0.0, count,
                at::zeros({2}, hidden.options().dtype(at::kFloat))};
    }
    const at::Tensor& head_weight = model.weights().lm_head;
    auto [loss, token_stats] = chunked_linear_cross_entropy(
        rows, head_weight, targets, options.chunk_rows.value_or(loss_chunk_rows(head_weight.size(0))), divisor,
        model.config().logits_scaling, model.config().final_logit_softcapping, options.token_loss);
    return {loss, count, token_stats};
}

}  // namespace ftl::model
