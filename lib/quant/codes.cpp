#include "quant/codes.h"

#include <algorithm>
#include <numeric>

#include "util/error.h"

namespace ftl::quant {
namespace {

// Written as doubles and rounded to fp32 once, as torch.tensor(list, dtype=float32) rounds them.
std::array<float, 16> to_floats(const std::array<double, 16>& values) {
    std::array<float, 16> out{};
    for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<float>(values[i]);
    return out;
}

std::array<float, 16> make_nf4() {
    return to_floats({-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                      -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                      0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                      0.7229568362236023, 1.0});
}

// Codes in bit order; the table is divided by its largest magnitude (12) in fp32.
std::array<float, 16> make_fp4() {
    std::array<float, 16> raw = to_floats({0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0,
                                           -6.0, -2.0, -3.0});
    for (float& v : raw) v = v / 12.0f;
    return raw;
}

FourBitBounds make_bounds(const std::array<float, 16>& code) {
    FourBitBounds b{};
    std::array<uint8_t, 16> order{};
    std::iota(order.begin(), order.end(), uint8_t{0});
    // Stable: FP4's +0 (code 0) sorts before -0 (code 8), as torch.argsort orders them.
    std::stable_sort(order.begin(), order.end(), [&](uint8_t x, uint8_t y) { return code[x] < code[y]; });
    for (size_t i = 0; i + 1 < order.size(); ++i) b.midpoints[i] = (code[order[i]] + code[order[i + 1]]) / 2.0f;
    b.order = order;
    return b;
}

}  // namespace

QuantType parse_quant_type(const std::string& text, const std::string& key) {
    if (text == "nf4") return QuantType::kNf4;
    if (text == "fp4") return QuantType::kFp4;
    fail(ErrorKind::kUsage, key + ": unknown 4-bit quant type '" + text + "' (expected nf4 or fp4)");
}

std::string quant_type_name(QuantType type) { return type == QuantType::kNf4 ? "nf4" : "fp4"; }

const std::array<float, 16>& code_table(QuantType type) {
    static const std::array<float, 16> nf4 = make_nf4();
    static const std::array<float, 16> fp4 = make_fp4();
    return type == QuantType::kNf4 ? nf4 : fp4;
}

const FourBitBounds& four_bit_bounds(QuantType type) {
    static const FourBitBounds nf4 = make_bounds(code_table(QuantType::kNf4));
    static const FourBitBounds fp4 = make_bounds(code_table(QuantType::kFp4));
    return type == QuantType::kNf4 ? nf4 : fp4;
}

}  // namespace ftl::quant
