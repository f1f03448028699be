// 8-bit weights as bitsandbytes stores and computes them for transformers' load_in_8bit
// (Linear8bitLt / Int8Params; LLM.int8(), Dettmers et al. 2022, arXiv 2208.07339): frozen base
// weights quantised row by row to int8, multiplied either dequantised or as int8 with the
// input's outlier columns kept in floating point.
//
// Layout of one weight W [out, in]:
//   codes   int8 [out, in] = round(W16 * (127 / scales[row])), W16 = W in float16
//   scales  fp32 [out] = max |W16| over the row (bitsandbytes' SCB)
// Dequantised (int8_vectorwise_dequant): codes * scales[row] * (1/127), fp32.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace ftl::quant {

// BitsAndBytesConfig's llm_int8_threshold default (train.py's --use_8bit_quantization sets no other).
inline constexpr double kLlmInt8Threshold = 6.0;

// A weight's quantisation state; `threshold` is BitsAndBytesConfig's llm_int8_threshold (6.0):
// input columns holding any |x| >= threshold are multiplied in floating point.
struct Int8State {
    at::Tensor scales;  // SCB, fp32 [out]
    double threshold = 6.0;
};

struct Int8Weight {
    at::Tensor codes;  // int8 [out, in]
    std::shared_ptr<const Int8State> state;
};

// bitsandbytes' int8_vectorwise_quant (its portable kernel) of a [rows, cols] tensor already in
// float16: per row absmax r (fp32) and codes round(a * (127 / r)) computed in fp32. With
// threshold > 0, entries with |a| >= threshold are left out of the absmax and their columns'
// codes are zero (with more than one row); `outlier_columns` gets those columns' indices (int64,
// ascending). A row of zeros gets codes 0.
struct RowQuantized {
    at::Tensor codes, absmax, outlier_columns;
};
RowQuantized quantize_rows_int8(const at::Tensor& half_rows, double threshold);

// A floating-point weight [out, in] (on any device) as Int8Params quantises it on load:
// quantize_rows_int8 of W in float16 without threshold; codes and scales land on `device`.
Int8Weight quantize_int8(const at::Tensor& weight, double threshold, const at::Device& device);

// int8_vectorwise_dequant: codes * scales[:, None] * (1/127) in fp32 (codes may be a subset of
// a weight's columns).
at::Tensor dequantize_int8(const at::Tensor& codes, const at::Tensor& scales);

// y = x W^T + bias for a frozen int8 W; x [..., in] of any float type, y in x's type.
//   dequantized = true: bitsandbytes' MatMul8bitFp, what Linear8bitLt runs while training on a
//     CPU: W = codes.to(x's type) * (scales * (1/127)) and a plain linear.
//   dequantized = false: MatMul8bitLt (GPUs, and evaluation everywhere): x in float16 quantised
//     row-wise with quantize_rows_int8 at the threshold, an exact int32 product with the codes,
//     scaled by (row absmax x scales) / 127^2 in fp32, the bias added, the outlier columns of x
//     (in x's type) multiplied with those columns of W dequantised and added.
// Backward (both): grad_x = grad_y.to(x's type) @ (codes.to(x's type) * (scales * (1/127))).
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& codes, const std::shared_ptr<const Int8State>& state,
                       const at::Tensor& bias, bool dequantized);

// A pre-quantised 8-bit weight as transformers saves one (`name` int8 [out, in], `name`'s prefix +
// ".SCB" fp32 [out], ".weight_format" uint8 0 = row-major), read through `tensor` (undefined when
// absent); nullopt when `name` is not int8. Errors name `source` and the tensor.
std::optional<Int8Weight> read_saved_int8(const std::string& name, const std::function<at::Tensor(const std::string&)>& tensor,
                                          double threshold, const at::Device& device, const std::string& source);

}  // namespace ftl::quant
