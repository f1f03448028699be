#include "quant/blockwise.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace ftl::quant {
namespace {

// Sorted position of the table entry nearest to x: the number of midpoints below x.
inline uint8_t four_bit_code(float x, const FourBitBounds& bounds) {
    const auto position = std::lower_bound(bounds.midpoints.begin(), bounds.midpoints.end(), x) - bounds.midpoints.begin();
    return bounds.order[static_cast<size_t>(position)];
}

}  // namespace

void quantize_4bit(const float* x, int64_t n, int64_t blocksize, QuantType type, uint8_t* packed, float* absmax) {
    const FourBitBounds& bounds = four_bit_bounds(type);
    const uint8_t zero_code = four_bit_code(0.0f, bounds);
    uint8_t pending = 0;  // high nibble waiting for its partner
    for (int64_t begin = 0, block = 0; begin < n; begin += blocksize, ++block) {
        const int64_t end = std::min(n, begin + blocksize);
        float max_abs = 0.0f;
        for (int64_t i = begin; i < end; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
        const bool full = end - begin == blocksize;
        const float divisor = std::max(max_abs, 1e-38f);
        absmax[block] = full ? max_abs : divisor;
        const float scale = 1.0f / divisor;
        for (int64_t i = begin; i < end; ++i) {
            const float scaled = std::clamp(full ? x[i] * scale : x[i] / divisor, -1.0f, 1.0f);
            const uint8_t code = four_bit_code(scaled, bounds);
            if (i % 2 == 0) pending = static_cast<uint8_t>(code << 4);
            else packed[i / 2] = pending | code;
        }
    }
    if (n % 2 == 1) packed[n / 2] = pending | zero_code;
}

EightBitLut eight_bit_lut(const float* code) {
    constexpr int kBins = 65536;
    std::array<float, 255> midpoints{};
    for (size_t i = 0; i < midpoints.size(); ++i) midpoints[i] = 0.5f * (code[i] + code[i + 1]);
    EightBitLut lut(kBins);
    size_t entry = 0;
    for (int bin = 0; bin < kBins; ++bin) {
        const float centre = -1.0f + (2.0f * static_cast<float>(bin)) / static_cast<float>(kBins - 1);
        while (entry < midpoints.size() && midpoints[entry] < centre) ++entry;
        lut[static_cast<size_t>(bin)] = static_cast<uint8_t>(entry);
    }
    return lut;
}

void quantize_8bit(const float* x, int64_t n, int64_t blocksize, const EightBitLut& lut, uint8_t* out, float* absmax) {
    for (int64_t begin = 0, block = 0; begin < n; begin += blocksize, ++block) {
        const int64_t end = std::min(n, begin + blocksize);
        float max_abs = 0.0f;
        for (int64_t i = begin; i < end; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
        absmax[block] = max_abs;
        if (max_abs == 0.0f) {
            std::fill(out + begin, out + end, uint8_t{0});
            continue;
        }
        const float inverse = 1.0f / max_abs;
        for (int64_t i = begin; i < end; ++i) {
            const float normed = std::clamp(x[i] * inverse, -1.0f, 1.0f);
            const float position = ((normed + 1.0f) * 0.5f) * 65535.0f;
            out[i] = lut[static_cast<uint16_t>(position + 0.5f)];
        }
    }
}

}  // namespace ftl::quant
