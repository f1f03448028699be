// Causal-LM loss without the [tokens x vocab] fp32 logits: HF's ForCausalLMLoss (logits in the
// model dtype, upcast to fp32, labels shifted left by one, ignore index -100, mean over the
// counted tokens or sum / num_items_in_batch) computed a chunk of rows at a time.
//
// Forward computes each chunk's loss and, at the same time, its gradient w.r.t. the hidden states
// and lm_head (softmax - onehot, the cross-entropy derivative); backward only scales those by the
// incoming gradient. Peak extra memory is one chunk of fp32 logits, [chunk_rows x V].
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "model/batch.h"
#include "model/decoder.h"

namespace ftl::model {

constexpr int64_t kIgnoreIndex = -100;

// Rows per chunk whose fp32 logits take at most 128 MiB (at least 64 rows): 261 for Llama 3's
// 128,256-token vocabulary. The chunk's logits, their exponentials and their 16-bit gradient are
// the loss's whole working set, so this bounds it near 2.5x that.
int64_t loss_chunk_rows(int64_t vocab_size);

// TRL's loss_type: "nll" (cross-entropy) or "dft" (Dynamic Fine-Tuning, Wu et al. 2025,
// arXiv:2508.05629: each token's cross-entropy weighted by its target probability, the weight
// detached, exp(-nll) · nll, as SFTTrainer.compute_loss computes it).
enum class TokenLoss { kNll, kDft };

struct LossOptions {
    std::optional<int64_t> chunk_rows;  // default: loss_chunk_rows(the head's rows)
    TokenLoss token_loss = TokenLoss::kNll;
    // Divide the summed loss by this (the HF Trainer's num_items_in_batch under gradient
    // accumulation); default: the number of counted tokens in this batch (a mean).
    std::optional<double> divisor;
};

struct LossResult {
    at::Tensor loss;         // scalar fp32, differentiable w.r.t. the model's weights
    int64_t counted_tokens;  // labels != -100 after the shift
    // TRL's token metrics over the counted positions, fp32 [2] without gradient (zeros when none
    // are counted): the summed entropy of each position's predicted distribution, and how many
    // targets are that distribution's argmax (SFTTrainer's entropy, mean_token_accuracy).
    at::Tensor token_stats;
};

// hidden [N, H] (model dtype), lm_head [V, H], targets [N] int64 (no ignored entries) ->
// sum over rows of cross_entropy(cap_logits((hidden @ lm_head^T) / logits_scaling, softcap) in
// fp32, target) / divisor, differentiable (logits_scaling: granite's, 1 elsewhere; softcap:
// gemma2's final_logit_softcapping, none elsewhere).
// With TokenLoss::kDft each row's loss and gradient are scaled by its target probability.
// Returns {loss, token stats [2]: summed entropy, argmax hits} (LossResult::token_stats).
std::pair<at::Tensor, at::Tensor> chunked_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& lm_head,
                                        const at::Tensor& targets, int64_t chunk_rows, double divisor,
                                        double logits_scaling = 1.0, std::optional<double> softcap = std::nullopt,
                                        TokenLoss token_loss = TokenLoss::kNll);

// The model's next-token loss on batch.labels (required).
LossResult causal_lm_loss(const CausalLM& model, const Batch& batch, const LossOptions& options = {},
                          const ForwardOptions& forward = {});

}  // namespace ftl::model
