#include "model/rms_norm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "util/cuda_elements.cuh"

namespace ftl::model::cuda {
namespace {

constexpr int kThreads = 256;  // per block; one block per row

using cuda_elements::from_float;
using cuda_elements::to_float;

// The sum of `v` over the block's threads, returned to every thread. `shared` holds one float per warp.
__device__ inline float block_sum(float v, float* shared) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
    __syncthreads();  // shared is reused by the next call
    return total;
}

template <class T>
__global__ void __launch_bounds__(kThreads) rms_norm_forward(RmsNormArgs a, T* y, float* rstd_out) {
    __shared__ float shared[kThreads / 32];
    const T* x = static_cast<const T*>(a.x) + blockIdx.x * a.hidden;
    const T* w = static_cast<const T*>(a.weight);
    T* out = y + blockIdx.x * a.hidden;
    float squares = 0.0f;
    for (int64_t j = threadIdx.x; j < a.hidden; j += kThreads) {
        const float v = to_float(x[j]);
        squares = fmaf(v, v, squares);
    }
    const float mean = block_sum(squares, shared) / static_cast<float>(a.hidden);
    const float rstd = rsqrtf(mean + a.eps);
    if (threadIdx.x == 0) rstd_out[blockIdx.x] = rstd;
    for (int64_t j = threadIdx.x; j < a.hidden; j += kThreads) {
        const float normed = to_float(from_float<T>(to_float(x[j]) * rstd));
        out[j] = from_float<T>(to_float(w[j]) * normed);
    }
}

template <class T>
__global__ void __launch_bounds__(kThreads) rms_norm_backward(RmsNormArgs a, const T* grad_y, const float* rstd_in, T* grad_x) {
    __shared__ float shared[kThreads / 32];
    const int64_t offset = blockIdx.x * a.hidden;
    const T* x = static_cast<const T*>(a.x) + offset;
    const T* w = static_cast<const T*>(a.weight);
    const T* g = grad_y + offset;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < a.hidden; j += kThreads) {
        const float gx = to_float(from_float<T>(to_float(g[j]) * to_float(w[j])));
        dot = fmaf(gx, to_float(x[j]), dot);
    }
    const float rstd = rstd_in[blockIdx.x];
    const float coefficient = block_sum(dot, shared) * rstd * rstd * rstd / static_cast<float>(a.hidden);
    T* dx = grad_x + offset;
    for (int64_t j = threadIdx.x; j < a.hidden; j += kThreads) {
        const float gx = to_float(from_float<T>(to_float(g[j]) * to_float(w[j])));
        dx[j] = from_float<T>(rstd * gx - coefficient * to_float(x[j]));
    }
}

template <class T>
int forward_as(const RmsNormArgs& a, void* y, float* rstd, cudaStream_t stream) {
    rms_norm_forward<T><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(a, static_cast<T*>(y), rstd);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int backward_as(const RmsNormArgs& a, const void* grad_y, const float* rstd, void* grad_x, cudaStream_t stream) {
    rms_norm_backward<T><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(a, static_cast<const T*>(grad_y), rstd,
                                                                                 static_cast<T*>(grad_x));
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_rms_norm_forward(const RmsNormArgs& args, void* y, float* rstd, void* stream) {
    if (args.rows == 0) return 0;
    auto s = static_cast<cudaStream_t>(stream);
    switch (args.type) {
        case ElementType::kFloat32: return forward_as<float>(args, y, rstd, s);
        case ElementType::kBFloat16: return forward_as<__nv_bfloat16>(args, y, rstd, s);
        case ElementType::kFloat16: return forward_as<__half>(args, y, rstd, s);
    }
    return static_cast<int>(cudaErrorInvalidValue);
}

int launch_rms_norm_backward(const RmsNormArgs& args, const void* grad_y, const float* rstd, void* grad_x, void* stream) {
    if (args.rows == 0) return 0;
    auto s = static_cast<cudaStream_t>(stream);
    switch (args.type) {
        case ElementType::kFloat32: return backward_as<float>(args, grad_y, rstd, grad_x, s);
        case ElementType::kBFloat16: return backward_as<__nv_bfloat16>(args, grad_y, rstd, grad_x, s);
        case ElementType::kFloat16: return backward_as<__half>(args, grad_y, rstd, grad_x, s);
    }
    return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace ftl::model::cuda
