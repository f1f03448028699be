// Blockwise quantisation kernels on plain buffers, bit-identical to bitsandbytes' CPU path
// (bitsandbytes 0.50: backends/default/ops.py quantize_4bit, csrc/cpu_ops.cpp quantize_cpu).
// Blocks are runs of `blocksize` consecutive elements of the flattened tensor; a shorter last
// block gets its own absmax. Each call handles whole blocks, so callers may split a tensor at
// block boundaries and run the pieces in parallel.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/codes.h"

namespace ftl::quant {

// 4-bit: absmax[b] = max |x| over block b; each x becomes the code whose table value is nearest
// to x / absmax[b] (x * (1/absmax) for full blocks, x / absmax for the short last block, both fp32,
// clamped to [-1, 1]; a zero block divides by 1e-38 and the short last block also stores that
// 1e-38 as its absmax, as bitsandbytes does). Codes are packed two per byte, the first element in
// the high nibble; an odd count is padded with the code of 0.0.
//   x [n] fp32, packed [(n + 1) / 2], absmax [ceil(n / blocksize)].
// A piece of a larger tensor passes pointers at its first element, byte and block, and an `n`
// that is a multiple of `blocksize` unless the piece ends the tensor (block sizes are even, so no
// byte is shared between pieces).
void quantize_4bit(const float* x, int64_t n, int64_t blocksize, QuantType type, uint8_t* packed, float* absmax);

// 8-bit blockwise with a sorted 256-entry `code` (the nested absmax uses the dynamic map and
// blocksize 256), as bitsandbytes' CPU quantizer does it: [-1, 1] is cut into 65536 bins, bin i
// centred at -1 + 2i/65535; a bin's code is the first entry whose upper midpoint is >= that
// centre (EightBitLut). A value's bin is trunc(((x * (1/absmax) + 1) * 0.5) * 65535 + 0.5)
// (fp32, no fused multiply-add, x * (1/absmax) clamped to [-1, 1]); a zero block gets code 0.
// This is the nearest entry except within about 1.5e-5 of a midpoint.
//   x [n], out [n], absmax [ceil(n / blocksize)].
using EightBitLut = std::vector<uint8_t>;  // [65536]
EightBitLut eight_bit_lut(const float* code);
void quantize_8bit(const float* x, int64_t n, int64_t blocksize, const EightBitLut& lut, uint8_t* out, float* absmax);

}  // namespace ftl::quant
