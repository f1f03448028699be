// AdamW on fp32 buffers in host memory, for ZeRO-Offload (the optimizer steps on the CPU while the
// device holds only what the forward needs). The update is optim::adamw_update's, operation for
// operation in fp32 (torch.optim.AdamW's single-tensor form):
//   p <- p * (1 - lr * wd)
//   m <- lerp(m, g, 1 - beta1)        (ATen's lerp: m + w (g - m) for w < 0.5, else g - (g - m)(1 - w))
//   v <- v * beta2 + ((1 - beta2) * g) * g
//   p <- p + (-lr / (1 - beta1^t)) * (m / (sqrt(v) / sqrt(1 - beta2^t) + eps))
// with every multiply and add rounded separately (no fused multiply-add), so the vector forms
// (AVX2: 8 lanes, AVX-512: 16) give the scalar form's results bit for bit; ATen's own kernels may
// fuse and so differ in the last bit. The form is chosen at run time from what the CPU has, and
// the elements are split over LibTorch's intra-op threads (at::get_num_threads()).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "optim/adamw.h"

namespace ftl::optim {

enum class CpuIsa { kScalar, kAvx2, kAvx512 };

// The widest form this CPU runs (x86-64: AVX-512F, else AVX2, else scalar).
CpuIsa best_cpu_isa();
bool cpu_supports(CpuIsa isa);
std::string isa_name(CpuIsa isa);

// One AdamW update of `n` elements in place, at 1-based `step`, on one thread. The buffers need
// no alignment.
void cpu_adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, int64_t step,
                      double lr, const AdamWOptions& options, CpuIsa isa);

// The same on contiguous fp32 CPU tensors of equal size, over LibTorch's intra-op threads.
void cpu_adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                      int64_t step, double lr, const AdamWOptions& options, CpuIsa isa = best_cpu_isa());

}  // namespace ftl::optim
