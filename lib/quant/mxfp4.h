// MXFP4 (the OCP Microscaling format's FP4, as the hub's gpt-oss checkpoints store their experts,
// transformers' integrations/mxfp4.py reading it): every 32 consecutive values of a row share one
// power-of-two scale.
//
// Layout of one tensor W [..., R, C] (C = 32 G):
//   blocks  uint8 [..., R, G, 16]: two E2M1 codes a byte, the low nibble first (values 2k, 2k+1)
//   scales  uint8 [..., R, G]: E8M0, the block's scale is 2^(scale - 127)
// E2M1 code c: sign c >> 3, magnitude {0, 0.5, 1, 1.5, 2, 3, 4, 6}[c & 7].
// Every value is a small multiple of a power of two, exact in bfloat16 and float32 (inside their
// exponent ranges), so dequantising in fp32 and rounding once gives transformers' values.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ftl::quant {

// blocks [..., G, 16], scales [..., G] -> [..., 32 G] in `dtype`, a leading slice at a time (the
// fp32 intermediate of one slice, not of the whole stack). Throws ftl::Error(kConfig) naming
// `name` when the shapes or types do not fit that layout.
at::Tensor dequantize_mxfp4(const at::Tensor& blocks, const at::Tensor& scales, at::ScalarType dtype, const std::string& name);

}  // namespace ftl::quant
