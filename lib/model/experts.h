// The mixture-of-experts MLP of qwen3_moe, mixtral and gpt_oss (DecoderConfig::moe), written with
// ATen ops so that autograd gives the gradients on any device.
//
// Over N tokens x [N, H] (Qwen3MoeSparseMoeBlock, MixtralSparseMoeBlock, GptOssMLP with
// transformers 5's grouped experts):
//   logits = router(x) [N, E] (in x's type; gpt_oss adds the router's bias);  p = softmax(logits) in fp32
//   (w, e) = top-k of p per token [N, k], w divided by its sum when MoeConfig::normalize_top_k,
//            rounded to the logits' type when MoeConfig::weights_in_logits_type; gpt_oss
//            (MoeConfig::softmax_after_top_k): top-k of the logits, softmaxed among themselves
//   out_t  = sum over the token's k slots of w * down_e(act(gate_e(x_t)) * up_e(x_t)), gpt_oss's
//            linears with biases and its clamped SwiGLU over interleaved gate/up columns
// The (token, slot) pairs are sorted by expert so that each expert multiplies its tokens at once;
// the k slots are summed after the weighted outputs are put back in token order, as transformers'
// grouped_mm path sums them.
#pragma once

#include <ATen/ATen.h>

#include "model/decoder.h"
#include "model/model_config.h"

namespace ftl::model {

// act(gate) * up over [n, I] halves (model/swiglu.h's).
using GatedActivationFn = at::Tensor (*)(const at::Tensor& gate, const at::Tensor& up);

// The layer's MoE MLP over y [B, T, H] -> [B, T, H] in y's type. Reads how many tokens each
// expert got back to the host (one small copy per MoE layer and pass) to split the sorted rows.
at::Tensor experts_forward(const DecoderLayerWeights& layer, const MoeConfig& moe, const at::Tensor& y,
                           GatedActivationFn gated, const ForwardOptions& options);

// gpt_oss's activation (GptOssExperts._apply_gate) over gate_up [n, 2I] with gate and up in
// alternate columns: g = min(gate, limit), u = clamp(up, -limit, limit), (u + 1) * g * sigmoid(alpha g)
// -> [n, I].
at::Tensor clamped_swiglu(const at::Tensor& gate_up, double alpha, double limit);

// Expert e of a stack (Linear with weight [E, out, in], bias [E, out] or none) over x [n, in] ->
// [n, out]: x W_e^T (+ b_e) + scaling * (x A_e^T) B_e^T with PEFT's ParamWrapper layout of the adapter (decoder.h's
// Linear). PEFT folds W_e + scaling * B_e A_e into the weight first; the product is the same, without
// a second copy of the whole stack.
at::Tensor expert_linear(const Linear& stack, int64_t expert, const at::Tensor& x);

}  // namespace ftl::model
