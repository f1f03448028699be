// The fused CUDA kernels' per-element formulas (model/pointwise_cuda.h) run on the host over CPU
// tensors, against the composite of ATen ops transformers runs: RoPE forward and backward bit for
// bit; SwiGLU within the bounds stated below (its exp is the C library's here, Sleef's in ATen's CPU
// kernel, CUDA's expf on the device). What is left for the GPU is only the launch
// (bench/bench_model_kernels.cpp checks it there).
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <limits>

#include "model/pointwise_cuda.h"
#include "model/rope.h"
#include "model/swiglu.h"
#include "catch.h"  // last: replaces c10's CHECK macro

using namespace ftl;

namespace {

// c10's conversions round to nearest even, as the device's do.
struct HostElements {
    static float to_float(float v) { return v; }
    static float to_float(c10::BFloat16 v) { return static_cast<float>(v); }
    static float to_float(c10::Half v) { return static_cast<float>(v); }
    template <class T>
    static T from_float(float v) {
        return T(v);
    }
};

// Calls `body` with a value of the C++ element type of `dtype`.
template <class Body>
void with_element_type(at::ScalarType dtype, Body&& body) {
    if (dtype == at::kFloat) body(float{});
    if (dtype == at::kBFloat16) body(c10::BFloat16{});
    if (dtype == at::kHalf) body(c10::Half{});
}

model::cuda::ElementType element_type(at::ScalarType dtype) {
    return dtype == at::kBFloat16 ? model::cuda::ElementType::kBFloat16
           : dtype == at::kHalf   ? model::cuda::ElementType::kFloat16
                                  : model::cuda::ElementType::kFloat32;
}

// The host run of the RoPE formula over every pair: x or a gradient [B, T, heads, d] -> same shape.
at::Tensor rope_on_host(const at::Tensor& in, const model::RopeTables& tables, bool backward) {
    model::cuda::RopeArgs a;
    a.cos = tables.cos.data_ptr();
    a.sin = tables.sin.data_ptr();
    a.tokens = in.size(0) * in.size(1);
    a.heads = in.size(2);
    a.head_dim = in.size(3);
    a.type = element_type(in.scalar_type());
    at::Tensor out = at::full_like(in, std::numeric_limits<double>::quiet_NaN());
    with_element_type(in.scalar_type(), [&](auto element) {
        using T = decltype(element);
        for (int64_t p = 0; p < a.pairs(); ++p)
            model::cuda::rope_at<T, HostElements>(a, in.data_ptr<T>(), out.data_ptr<T>(), backward, p);
    });
    return out;
}

double relative_error(const at::Tensor& out, const at::Tensor& ref) {
    return (out.to(at::kDouble) - ref.to(at::kDouble)).norm().item<double>() / ref.to(at::kDouble).norm().item<double>();
}

}  // namespace

TEST_CASE("the RoPE kernel's formula gives transformers' composite bit for bit, forward and backward", "[model]") {
    at::manual_seed(11);
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf})
        for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{2, 5, 3, 8}, {1, 7, 4, 64}, {3, 1, 1, 2}}) {
            CAPTURE(c10::toString(dtype), shape);
            const std::vector<int64_t> table_shape{shape[0], shape[1], shape[3]};
            // Tables unlike transformers' (whose halves repeat) so that a swapped half shows.
            const model::RopeTables tables{(at::rand(table_shape) * 2 - 1).to(dtype), (at::rand(table_shape) * 2 - 1).to(dtype)};
            const at::Tensor x = (at::randn(shape) * 3).to(dtype).requires_grad_(true);
            const at::Tensor g = at::randn(shape).to(dtype);
            const at::Tensor y = model::apply_rope_reference(x, tables);
            y.backward(g);
            CHECK(at::equal(rope_on_host(x.detach(), tables, /*backward=*/false), y.detach()));
            CHECK(at::equal(rope_on_host(g, tables, /*backward=*/true), x.grad()));
        }
}

TEST_CASE("the SwiGLU kernel's formula gives transformers' composite's values and gradients", "[model]") {
    at::manual_seed(12);
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
        CAPTURE(c10::toString(dtype));
        const std::vector<int64_t> shape{3, 7, 331};
        const at::Tensor gate = (at::randn(shape) * 4).to(dtype).requires_grad_(true);
        const at::Tensor up = at::randn(shape).to(dtype).requires_grad_(true);
        const at::Tensor g = at::randn(shape).to(dtype);
        const at::Tensor y = model::swiglu_reference(gate, up);
        y.backward(g);
        // The same composite in float64 on the same inputs: what both approximate.
        const at::Tensor gate64 = gate.detach().to(at::kDouble).requires_grad_(true);
        const at::Tensor up64 = up.detach().to(at::kDouble).requires_grad_(true);
        const at::Tensor y64 = model::swiglu_reference(gate64, up64);
        y64.backward(g.to(at::kDouble));

        model::cuda::SwigluArgs a;
        a.gate = gate.data_ptr();
        a.up = up.data_ptr();
        a.count = gate.numel();
        a.type = element_type(dtype);
        const double nan = std::numeric_limits<double>::quiet_NaN();
        at::Tensor out = at::full(shape, nan, gate.options()), dgate = at::full(shape, nan, gate.options()),
                   dup = at::full(shape, nan, gate.options());
        with_element_type(dtype, [&](auto element) {
            using T = decltype(element);
            for (int64_t i = 0; i < a.count; ++i) {
                model::cuda::swiglu_forward_at<T, HostElements>(a, out.data_ptr<T>(), i);
                model::cuda::swiglu_backward_at<T, HostElements>(a, g.data_ptr<T>(), dgate.data_ptr<T>(), dup.data_ptr<T>(), i);
            }
        });
        // Against ATen's own rounding: the exp of two libraries may differ in fp32's last place, which a
        // 16-bit result hides unless the value sits on a rounding boundary: <= 1e-6 for fp32, <= 1e-3
        // for 16 bits (one 16-bit ulp in a few of the 6951 elements).
        const double own_bound = dtype == at::kFloat ? 1e-6 : 1e-3;
        CHECK(relative_error(out, y) <= own_bound);
        CHECK(relative_error(dgate, gate.grad()) <= own_bound);
        CHECK(relative_error(dup, up.grad()) <= own_bound);
        // Against float64: fp32's rounding, or 16 bits' (2^-8 for bf16) over a few rounded steps.
        const double exact_bound = dtype == at::kFloat ? 1e-6 : 1e-2;
        CHECK(relative_error(out, y64) <= exact_bound);
        CHECK(relative_error(dgate, gate64.grad()) <= exact_bound);
        CHECK(relative_error(dup, up64.grad()) <= exact_bound);
        CHECK(at::isfinite(out).all().item<bool>());
        CHECK(at::isfinite(dgate).all().item<bool>());
        CHECK(at::isfinite(dup).all().item<bool>());
    }
}
