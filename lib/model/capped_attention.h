// Gemma 2's capped attention (attn_logit_softcapping) a block of queries at a time.
//
// The values are transformers' eager_attention_forward with softcap, op for op within a block:
// scores q k^T * scale in the inputs' type, capped to cap * tanh(scores / cap), masked with the
// lowest finite value, softmax in fp32 cast back to the inputs' type, times v. What differs is
// what is kept: autograd over those ops keeps the [B, n_h, T, S] probabilities (and more) for
// backward; this keeps q, k, v, the output and one fp32 log-sum-exp per query, and backward
// recomputes each block's scores (FlashAttention's backward pass, Dao et al. 2022, with the cap's
// derivative 1 - tanh^2 between the softmax and the scores). Peak extra memory: a few tensors of
// one block's scores.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ftl::model {

// query [B, n, T, d], key and value [B, n, S, d] (grouped heads already expanded), visible
// [B|1, 1, T, S] bool (true = may attend; every query sees at least one key) -> [B, n, T, d] in
// query's type; differentiable in query, key and value. `block_queries`: queries per block (0:
// as many as keep a block's fp32 scores within 64 MiB, at least 16).
at::Tensor capped_attention_blocks(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                   const at::Tensor& visible, double scale, double cap, int64_t block_queries = 0);

// The lowest finite value of `type`: transformers' additive mask value.
double lowest_finite(at::ScalarType type);

}  // namespace ftl::model
