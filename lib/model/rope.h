// Rotary position embeddings as transformers computes them (modeling_rope_utils.py):
// inv_freq[i] = 1 / theta^(2i / head_dim), i < head_dim/2, rescaled per rope type; the angle of
// position p is p * inv_freq, and cos/sin are taken over cat(angles, angles) in fp32, then cast
// to the activation dtype.
#pragma once

#include <ATen/ATen.h>

#include "model/model_config.h"

namespace ftl::model {

// inv_freq [head_dim/2] fp32 of `rope` (config.rope, or gemma3's sliding_rope) for a batch whose
// largest position is `max_position` (only the dynamic type depends on it: HF rescales the base
// when max_position + 1 exceeds max_position_embeddings; it caches the largest length seen, we use
// the batch's own).
at::Tensor rope_inverse_frequencies(const DecoderConfig& config, const RopeConfig& rope, int64_t max_position,
                                    const at::Device& device);

struct RopeTables {
    at::Tensor cos;  // [B, T, rotary_dim] (head_dim unless partial), activation dtype
    at::Tensor sin;
};

// position_ids [B, T] int64 -> cos/sin tables of `rope` in `dtype`.
RopeTables rope_tables(const DecoderConfig& config, const RopeConfig& rope, const at::Tensor& position_ids,
                       at::ScalarType dtype);

// x [B, T, heads, head_dim] rotated by the tables: x*cos + rotate_half(x)*sin, where
// rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]); differentiable in x. Tables narrower than
// head_dim (phi3's partial rotation) rotate only the leading dims.
// On a GPU (x and the tables of one type: fp32, bf16 or fp16) one fused kernel each way
// (model/pointwise_cuda.h), bit for bit the composite's values; backward keeps only the tables,
// which every layer shares. Elsewhere the composite below.
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& tables);

// The composite of ATen ops transformers runs (the CPU path and the kernels' reference).
at::Tensor apply_rope_reference(const at::Tensor& x, const RopeTables& tables);

}  // namespace ftl::model
