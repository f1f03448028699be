#include "quant/dequantize_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "util/cuda_elements.cuh"

namespace ftl::quant::cuda {
namespace {

constexpr int64_t kNestedBlocksize = 256;

using cuda_elements::from_float;

__device__ inline float block_scale(const DequantizeArgs& a, int64_t block) {
    if (!a.absmax_codes) return a.absmax[block];
    return __fadd_rn(__fmul_rn(a.nested_code[a.absmax_codes[block]], a.nested_absmax[block / kNestedBlocksize]), a.offset);
}

// Each thread expands 4 packed bytes (8 elements; block sizes are multiples of 32, so the 8 share
// one scale), with a grid-stride loop.
template <class T>
__global__ void dequantize_kernel(DequantizeArgs a) {
    T* out = static_cast<T*>(a.out);
    const int64_t groups = (a.n + 7) / 8;
    for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
         g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t first = g * 8;
        const float scale = block_scale(a, first / a.blocksize);
        const int64_t bytes = (a.n + 1) / 2;
        for (int k = 0; k < 4; ++k) {
            const int64_t byte = g * 4 + k;
            if (byte >= bytes) break;
            const uint8_t b = a.packed[byte];
            const int64_t j = first + 2 * k;
            out[j] = from_float<T>(__fmul_rn(a.table[b >> 4], scale));
            if (j + 1 < a.n) out[j + 1] = from_float<T>(__fmul_rn(a.table[b & 15], scale));
        }
    }
}

}  // namespace

int launch_dequantize_4bit(const DequantizeArgs& args, void* stream) {
    if (args.n == 0) return 0;
    const int threads = 256;
    const int64_t groups = (args.n + 7) / 8;
    const int blocks = static_cast<int>(groups / threads + 1 < 65535 * 8 ? groups / threads + 1 : 65535 * 8);
    auto s = static_cast<cudaStream_t>(stream);
    switch (args.out_type) {
        case OutType::kFloat32: dequantize_kernel<float><<<blocks, threads, 0, s>>>(args); break;
        case OutType::kBFloat16: dequantize_kernel<__nv_bfloat16><<<blocks, threads, 0, s>>>(args); break;
        case OutType::kFloat16: dequantize_kernel<__half><<<blocks, threads, 0, s>>>(args); break;
    }
    return static_cast<int>(cudaGetLastError());
}

}  // namespace ftl::quant::cuda
