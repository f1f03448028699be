// The CUDA dequantisation kernel behind quant::dequantize_4bit for tensors on a GPU, on plain
// pointers so that this file's translation unit needs no LibTorch headers (nvcc stays fast).
// Same arithmetic as the CPU path, bit for bit: scale = absmax[b], or with nested state
// nested_code[absmax_codes[b]] * nested_absmax[b / 256] + offset (multiply, then add: no fused
// multiply-add); out[j] = table[code_j] * scale[j / blocksize] in fp32, rounded to nearest even
// into the output type.
#pragma once

#include <cstdint>

namespace ftl::quant::cuda {

enum class OutType { kFloat32, kBFloat16, kFloat16 };

struct DequantizeArgs {
    const uint8_t* packed = nullptr;        // [(n + 1) / 2]
    const float* absmax = nullptr;          // [blocks] fp32, or null when nested
    const uint8_t* absmax_codes = nullptr;  // [blocks] (nested)
    const float* nested_absmax = nullptr;   // [ceil(blocks / 256)] (nested)
    const float* nested_code = nullptr;     // [256] (nested)
    float offset = 0.0f;                    // (nested)
    float table[16] = {};
    int64_t n = 0;
    int64_t blocksize = 64;
    void* out = nullptr;  // [n] of `out_type`
    OutType out_type = OutType::kFloat32;
};

// Enqueues the kernel on `stream` (a cudaStream_t). Returns the launch's cudaError_t as int (0 = ok).
int launch_dequantize_4bit(const DequantizeArgs& args, void* stream);

}  // namespace ftl::quant::cuda
