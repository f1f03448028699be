// Causal self-attention as transformers' SDPA path computes it, on the kernel that suits the
// batch:
//  - variable-length flash attention (ATen's _flash_attention_forward over cumulative span starts)
//    when the batch is padded or packed and carries its attention spans (train::collate makes them on the host), on a GPU
//    with flash kernels (compute capability 8 or more), in 16 bits, with head_dim a multiple of 8
//    up to 256, and no sliding window in reach: padded and packed batches then need no [B, 1, T, T]
//    mask and no masked kernel, and no span attends across a row or document border;
//  - otherwise scaled_dot_product_attention: is_causal without a mask where plain causal
//    attention is exact (flash on a GPU), else attention_mask_for's boolean mask.
// Under autocast both run in the autocast type (SDPA is on autocast's 16-bit list).
// With a softcap (Gemma 2) or sinks (gpt-oss) neither: transformers' eager attention's values, a
// block of queries at a time (model/eager_attention.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "model/batch.h"
#include "model/eager_attention.h"

namespace ftl::model {

// How the tokens of one batch may attend, for layers of one window (built once, shared by them).
struct AttentionPattern {
    at::Tensor mask;                   // [B|1, 1, T, T] bool (true = may attend), or undefined
    at::Tensor span_starts;            // defined: variable-length flash attention over these spans
    int64_t longest_span = 0;
    at::ScalarType span_type = at::kBFloat16;  // the 16-bit type the spans' attention runs in
};

// The pattern for `batch` under `window`. `attention_type` is the type attention computes in (the
// autocast type, or the activations'); `head_dim` the heads' width; `variable_length`: whether
// the spans may be used at all (ForwardOptions::fused_kernels), else a mask.
AttentionPattern attention_pattern(const Batch& batch, std::optional<int64_t> window, const at::Device& device,
                                   at::ScalarType attention_type, int64_t head_dim, bool variable_length = true);

// q [B, T, n_h, d], k and v [B, S, n_kv, d] (n_kv divides n_h; S > T only with cached keys, whose
// queries see every key) -> [B, T, n_h * d], scores scaled by `scale` and, with `eager` given a cap
// or sinks, those applied as eager_attention_blocks applies them (the pattern must then be a mask
// or none).
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const AttentionPattern& pattern, double scale, const EagerScores& eager = {});

}  // namespace ftl::model
