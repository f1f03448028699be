// The code tables of bitsandbytes' blockwise quantisation (bitsandbytes/functional.py:
// get_4bit_type, create_dynamic_map): a value is stored as the index of the nearest table entry
// after dividing it by its block's absolute maximum.
#pragma once

#include <array>
#include <string>

namespace ftl::quant {

enum class QuantType { kNf4, kFp4 };

// "nf4" | "fp4" -> QuantType; anything else is ftl::Error(kUsage) naming `key` and the choices.
QuantType parse_quant_type(const std::string& text, const std::string& key);
std::string quant_type_name(QuantType type);

// The 16 values a 4-bit code stands for, indexed by the code, in [-1, 1], fp32.
// NF4 (Dettmers et al. 2023, QLoRA): quantiles of N(0, 1), sorted, 7 -> 0.0, 15 -> 1.0.
// FP4: 1 sign bit (0b1000), 2 exponent bits, 1 mantissa bit, {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12.
const std::array<float, 16>& code_table(QuantType type);

// The quantiser's decision for a normalised value x in [-1, 1]: the number of midpoints between
// adjacent sorted table entries that are < x picks the sorted entry (ties go to the lower
// entry), then `order` maps the sorted position to the code -- torch.bucketize over the midpoints
// as bitsandbytes' default quantize_4bit does.
struct FourBitBounds {
    std::array<float, 15> midpoints;  // ascending
    std::array<uint8_t, 16> order;    // sorted position -> code
};
const FourBitBounds& four_bit_bounds(QuantType type);

}  // namespace ftl::quant
