// HF LlamaRMSNorm: y = weight * (x / sqrt(mean(x^2) + eps) computed in fp32, cast back to x's type).
//
// On a GPU (x and weight of one type: fp32, bf16 or fp16) one fused kernel each way
// (model/rms_norm_cuda.h): forward reads x once and writes y and one fp32 rstd per row; backward
// keeps only x and rstd (the composite's autograd keeps an fp32 copy of x and the normalised
// tensor as well). Elsewhere, and as the reference the kernels are tested against, the composite
// of ATen ops below.
#pragma once

#include <ATen/ATen.h>

namespace ftl::model {

// x [..., H], weight [H] -> [..., H] in promote(x, weight)'s type; differentiable in both.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The composite of ATen ops HF's module runs (the CPU path).
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// The Gemmas' RMSNorm (GemmaRMSNorm): y = (x / sqrt(mean(x^2) + eps) * (1 + weight)) all in fp32,
// cast to x's type once at the end; a zero weight is the identity. x [..., H], weight [H] ->
// [..., H] in x's type. A composite of ATen ops on every device (no fused kernel yet).
at::Tensor unit_offset_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// OLMo 2 and 3's RMSNorm (Olmo2RMSNorm): y = (weight * (x / sqrt(mean(x^2) + eps))) with the
// normalised x in fp32 and the product cast to x's type once. x [..., H], weight [H] -> [..., H]
// in x's type. A composite of ATen ops on every device (no fused kernel yet).
at::Tensor weight_in_fp32_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace ftl::model
