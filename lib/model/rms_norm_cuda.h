// The CUDA kernels behind model::rms_norm for tensors on a GPU, on plain pointers so that this
// file's translation unit needs no LibTorch headers (nvcc stays fast). One block per row.
//
// Forward, per row of H elements x (type T; weight w of type T), as HF's LlamaRMSNorm computes it:
//   rstd = rsqrt(mean(float(x)^2) + eps);   y = T(float(w) * float(T(float(x) * rstd)))
// and rstd is written out (fp32, one per row) for backward.
// Backward (input gradient only), the derivative of that formula with the product g * w rounded to
// T as autograd of the composite rounds it:
//   gx = float(T(float(g) * float(w)));  dx = T(rstd * gx - rstd^3 * float(x) * sum(gx * float(x)) / H)
#pragma once

#include <cstdint>

#include "model/kernel_element.h"

namespace ftl::model::cuda {

struct RmsNormArgs {
    const void* x = nullptr;       // [rows, hidden] of `type`, rows contiguous
    const void* weight = nullptr;  // [hidden] of `type`
    int64_t rows = 0, hidden = 0;
    float eps = 1e-6f;
    ElementType type = ElementType::kFloat32;
};

// y [rows, hidden] of args.type, rstd [rows] fp32. Returns the launch's cudaError_t as int (0 = ok).
int launch_rms_norm_forward(const RmsNormArgs& args, void* y, float* rstd, void* stream);

// grad_y [rows, hidden] and rstd as forward wrote it -> grad_x [rows, hidden], all of args.type.
int launch_rms_norm_backward(const RmsNormArgs& args, const void* grad_y, const float* rstd, void* grad_x, void* stream);

}  // namespace ftl::model::cuda
