// Device-side conversions between fp32 and the element types our CUDA kernels read and write
// (fp32, bf16, fp16), rounding to nearest even as PyTorch's casts do. For .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ftl::cuda_elements {

template <class T>
__device__ inline float to_float(T v);
template <>
__device__ inline float to_float<float>(float v) { return v; }
template <>
__device__ inline float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ inline float to_float<__half>(__half v) { return __half2float(v); }

template <class T>
__device__ inline T from_float(float v);
template <>
__device__ inline float from_float<float>(float v) { return v; }
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ inline __half from_float<__half>(float v) { return __float2half_rn(v); }

}  // namespace ftl::cuda_elements
