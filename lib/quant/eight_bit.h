// bitsandbytes' 8-bit blockwise quantisation as tensors on any device: the dynamic maps, and
// quantize/dequantize of a flat fp32 tensor in blocks of `blocksize` (the nested absmax of 4-bit
// weights uses blocksize 256 with the signed map; the 8-bit optimizers keep their moments so,
// the first with the signed map and the second with the unsigned one).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ftl::quant {

// bitsandbytes' 8-bit dynamic map (create_dynamic_map(signed, max_exponent_bits=7, total_bits=8);
// Dettmers 2015, "8-bit approximations"), computed with the same LibTorch ops so that it is the
// same fp32 table on this machine: 256 ascending values, in [-1, 1] when signed, [0, 1] when not.
at::Tensor dynamic_map(bool is_signed);

// Blockwise 8-bit codes for one ascending 256-entry map, held on `device`. quantize is
// bitsandbytes' CPU quantizer (quant::quantize_8bit: absmax per block, x * (1 / absmax) clamped to
// [-1, 1], binned into 65536 bins, each bin's code from EightBitLut; a zero block gets code 0)
// written as ATen ops, each rounding once, so it gives the same codes on a GPU;
// dequantize is code[q] * absmax[block].
class EightBitBlockwise {
public:
    EightBitBlockwise(const at::Tensor& code, int64_t blocksize, const at::Device& device);

    // x: fp32, any shape, on the device. codes: uint8, x's numel; absmax: fp32 [ceil(n / blocksize)].
    void quantize(const at::Tensor& x, at::Tensor& codes, at::Tensor& absmax) const;
    // An fp32 tensor of `codes`' shape.
    at::Tensor dequantize(const at::Tensor& codes, const at::Tensor& absmax) const;
    int64_t blocks(int64_t n) const { return (n + blocksize_ - 1) / blocksize_; }

private:
    at::Tensor code_;  // [256] fp32
    at::Tensor lut_;   // [65536] int64: bin -> code index
    int64_t blocksize_;
};

}  // namespace ftl::quant
