// transformers' eager attention for the families SDPA cannot express, a block of queries at a time:
// Gemma 2's capped scores (attn_logit_softcapping) and gpt-oss's sinks.
//
// The values are transformers' eager_attention_forward op for op within a block: scores
// q k^T * scale in the inputs' type, capped to cap * tanh(scores / cap) (Gemma 2), masked with the
// lowest finite value, softmax in fp32 cast back to the inputs' type, times v. With sinks
// (GptOssAttention) each head's sink logit is appended to every query's scores, the row's maximum
// subtracted in the scores' type, the softmax taken over the S + 1 entries and the sink's column
// dropped, so the weights over the keys sum to less than 1. What differs is what is kept:
// autograd over those ops keeps the [B, n_h, T, S] probabilities (and more) for backward; this
// keeps q, k, v, the output and one fp32 log-sum-exp per query, and backward recomputes each
// block's scores (FlashAttention's backward pass, Dao et al. 2022, with the cap's derivative
// 1 - tanh^2 between the softmax and the scores; a sink's gradient is -p_sink * sum_j p_j dP_j,
// summed over queries). Peak extra memory: a few tensors of one block's scores.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace ftl::model {

// What the scores get beyond plain softmax attention.
struct EagerScores {
    std::optional<double> cap;  // Gemma 2: cap * tanh(scores / cap) before the mask
    at::Tensor sinks;           // gpt_oss: [n] one logit per head, differentiable; undefined: none
};

// query [B, n, T, d], key and value [B, n, S, d] (grouped heads already expanded), visible
// [B|1, 1, T, S] bool (true = may attend; every query sees at least one key, or has a sink) ->
// [B, n, T, d] in query's type; differentiable in query, key, value and the sinks.
// `block_queries`: queries per block (0: as many as keep a block's fp32 scores within 64 MiB, at
// least 16).
at::Tensor eager_attention_blocks(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                  const at::Tensor& visible, double scale, const EagerScores& scores,
                                  int64_t block_queries = 0);

// The lowest finite value of `type`: transformers' additive mask value.
double lowest_finite(at::ScalarType type);

}  // namespace ftl::model
