// What the model's CUDA kernels and their host-side tests share, without LibTorch or CUDA headers:
// the element types the kernels take, and the arithmetic their per-element formulas use, written
// once for the device (nvcc) and the host (the unit tests run the same formulas on CPU tensors and
// compare them with the composite of ATen ops bit for bit).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FTL_HOST_DEVICE __host__ __device__
#else
#define FTL_HOST_DEVICE
#endif

namespace ftl::model::cuda {

enum class ElementType { kFloat32, kBFloat16, kFloat16 };

// fp32 product and sum rounded once each, never contracted into a fused multiply-add, as ATen's
// separate mul and add kernels round them.
FTL_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

FTL_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// fp32 exp: CUDA's expf on the device (what ATen's kernels call), the C library's on the host.
FTL_HOST_DEVICE inline float exp_f32(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return std::exp(x);
#endif
}

// `v` rounded to T and read back as fp32. `Elements` converts: static float to_float(T) and
// template <class T> static T from_float(float), rounding to nearest even as PyTorch's casts do.
template <class T, class Elements>
FTL_HOST_DEVICE inline float rounded(float v) {
    return Elements::to_float(Elements::template from_float<T>(v));
}

}  // namespace ftl::model::cuda
