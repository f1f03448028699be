// The fused SwiGLU and rotary-embedding kernels behind model::swiglu and model::apply_rope for
// tensors on a GPU. Each kernel is a loop over one per-element formula written here once, for the
// device and the host: the unit tests run these formulas over CPU tensors and hold them to the
// composite of ATen ops that transformers runs (bit for bit where ATen's arithmetic is plain
// products and sums, within stated bounds where it calls exp), so that only the launch itself is
// left for the GPU check (bench/bench_model_kernels.cpp). Plain pointers: the .cu file needs no
// LibTorch headers.
#pragma once

#include <cstdint>

#include "model/kernel_element.h"

namespace ftl::model::cuda {

// SwiGLU, LlamaMLP's act_fn(gate) * up with act_fn = SiLU, over `count` elements of one type T
// (all arrays contiguous, same length). With s = T(g / (1 + exp(-g))) as ATen's silu rounds it:
//   forward:  y = T(s * u)
//   backward: du = T(dy * s);  dg = T(T(dy * u) * sigmoid(g) * (1 + g * (1 - sigmoid(g))))
// (mul's backward, then silu_backward on its rounded gradient, all in fp32 between roundings).
struct SwigluArgs {
    const void* gate = nullptr;
    const void* up = nullptr;
    int64_t count = 0;
    ElementType type = ElementType::kFloat32;
};

template <class T, class Elements>
FTL_HOST_DEVICE inline void swiglu_forward_at(const SwigluArgs& a, T* y, int64_t i) {
    const float g = Elements::to_float(static_cast<const T*>(a.gate)[i]);
    const float u = Elements::to_float(static_cast<const T*>(a.up)[i]);
    const float s = rounded<T, Elements>(g / (1.0f + exp_f32(-g)));
    y[i] = Elements::template from_float<T>(mul_rn(s, u));
}

template <class T, class Elements>
FTL_HOST_DEVICE inline void swiglu_backward_at(const SwigluArgs& a, const T* grad_y, T* grad_gate, T* grad_up, int64_t i) {
    const float g = Elements::to_float(static_cast<const T*>(a.gate)[i]);
    const float u = Elements::to_float(static_cast<const T*>(a.up)[i]);
    const float dy = Elements::to_float(grad_y[i]);
    const float sigmoid = 1.0f / (1.0f + exp_f32(-g));
    const float s = rounded<T, Elements>(g / (1.0f + exp_f32(-g)));
    grad_up[i] = Elements::template from_float<T>(mul_rn(dy, s));
    const float ds = rounded<T, Elements>(mul_rn(dy, u));
    grad_gate[i] = Elements::template from_float<T>(ds * sigmoid * (1.0f + g * (1.0f - sigmoid)));
}

// Rotary embedding as transformers' apply_rotary_pos_emb computes it, on x [tokens, heads, d]
// (contiguous; tokens = B * T) with tables cos, sin [tokens, d] of the same type T:
//   out = T(T(x * cos) + T(rotate_half(x) * sin)),  rotate_half(x) = cat(-x[d/2:], x[:d/2]).
// One call handles the pair (j, j + d/2) of one head of one token. Backward is the transpose:
//   dx[j] = T(T(g[j] * cos[j]) + T(g[j+h] * sin[j+h]));  dx[j+h] = T(T(g[j+h] * cos[j+h]) - T(g[j] * sin[j]))
// with h = d/2, each product rounded to T as mul's backward rounds it, then summed once as
// autograd accumulates x's two gradients.
struct RopeArgs {
    const void* cos = nullptr;
    const void* sin = nullptr;
    int64_t tokens = 0, heads = 0, head_dim = 0;  // head_dim even
    ElementType type = ElementType::kFloat32;
    FTL_HOST_DEVICE int64_t pairs() const { return tokens * heads * (head_dim / 2); }
};

// `in` is x (forward) or the output's gradient (backward); `out` the rotated x or x's gradient.
template <class T, class Elements>
FTL_HOST_DEVICE inline void rope_at(const RopeArgs& a, const T* in, T* out, bool backward, int64_t pair) {
    const int64_t half = a.head_dim / 2;
    const int64_t j = pair % half, head_row = pair / half, token = head_row / a.heads;
    const int64_t first = head_row * a.head_dim + j, second = first + half;
    const int64_t table_first = token * a.head_dim + j, table_second = table_first + half;
    const T* cos = static_cast<const T*>(a.cos);
    const T* sin = static_cast<const T*>(a.sin);
    const float x1 = Elements::to_float(in[first]), x2 = Elements::to_float(in[second]);
    const float c1 = Elements::to_float(cos[table_first]), c2 = Elements::to_float(cos[table_second]);
    const float s1 = Elements::to_float(sin[table_first]), s2 = Elements::to_float(sin[table_second]);
    const float x1c1 = rounded<T, Elements>(mul_rn(x1, c1)), x2c2 = rounded<T, Elements>(mul_rn(x2, c2));
    if (!backward) {
        out[first] = Elements::template from_float<T>(add_rn(x1c1, -rounded<T, Elements>(mul_rn(x2, s1))));
        out[second] = Elements::template from_float<T>(add_rn(x2c2, rounded<T, Elements>(mul_rn(x1, s2))));
    } else {
        out[first] = Elements::template from_float<T>(add_rn(x1c1, rounded<T, Elements>(mul_rn(x2, s2))));
        out[second] = Elements::template from_float<T>(add_rn(x2c2, -rounded<T, Elements>(mul_rn(x1, s1))));
    }
}

// Launchers: each returns the launch's cudaError_t as int (0 = ok); nothing runs for zero elements.
int launch_swiglu_forward(const SwigluArgs& args, void* y, void* stream);
int launch_swiglu_backward(const SwigluArgs& args, const void* grad_y, void* grad_gate, void* grad_up, void* stream);
int launch_rope(const RopeArgs& args, const void* in, void* out, bool backward, void* stream);

}  // namespace ftl::model::cuda
