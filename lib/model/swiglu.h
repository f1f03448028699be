// LlamaMLP's gated activation, silu(gate) * up (transformers: act_fn(gate_proj(x)) * up_proj(x)).
//
// On a GPU (gate and up of one shape and one type: fp32, bf16 or fp16) one fused kernel each way
// (model/pointwise_cuda.h): forward reads gate and up once and writes the product; backward keeps
// gate and up only (the composite's autograd also keeps silu(gate), one more [tokens, intermediate]
// tensor per layer) and writes both gradients in one pass. Elsewhere, and as the reference the
// kernels are tested against, the composite of ATen ops.
#pragma once

#include <ATen/ATen.h>

namespace ftl::model {

// gate, up [..., I] -> [..., I]; differentiable in both.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// The composite of ATen ops transformers runs (the CPU path).
at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);

// The Gemmas' gated activation, gelu_tanh(gate) * up (GemmaMLP with gelu_pytorch_tanh: torch's
// gelu(approximate="tanh")). gate, up [..., I] -> [..., I]; a composite on every device.
at::Tensor gelu_tanh_gated(const at::Tensor& gate, const at::Tensor& up);

}  // namespace ftl::model
