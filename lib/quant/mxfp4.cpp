#include "quant/mxfp4.h"

#include <ATen/core/grad_mode.h>

#include "util/error.h"

namespace ftl::quant {
namespace {

// The 16 E2M1 values, in code order (sign bit 8).
at::Tensor e2m1_values(const at::Device& device) {
    const float values[16] = {0.0F, 0.5F, 1.0F, 1.5F, 2.0F, 3.0F, 4.0F, 6.0F,
                              -0.0F, -0.5F, -1.0F, -1.5F, -2.0F, -3.0F, -4.0F, -6.0F};
    return at::tensor(at::ArrayRef<float>(values, 16)).to(device);
}

// One slice: blocks [..., G, 16], scales [..., G] -> fp32 [..., G, 32].
at::Tensor dequantize_slice(const at::Tensor& blocks, const at::Tensor& scales, const at::Tensor& table) {
    const at::Tensor low = table.index({at::bitwise_and(blocks, 0x0F).to(at::kLong)});
    const at::Tensor high = table.index({at::bitwise_right_shift(blocks, 4).to(at::kLong)});
    std::vector<int64_t> shape = blocks.sizes().vec();
    shape.back() = 32;
    const at::Tensor values = at::stack({low, high}, -1).view(shape);  // low nibble first
    return at::ldexp(values, (scales.to(at::kInt) - 127).unsqueeze(-1));
}

}  // namespace

at::Tensor dequantize_mxfp4(const at::Tensor& blocks, const at::Tensor& scales, at::ScalarType dtype, const std::string& name) {
    at::NoGradGuard no_grad;
    const bool fits = blocks.scalar_type() == at::kByte && scales.scalar_type() == at::kByte && blocks.dim() >= 2 &&
                      blocks.size(-1) == 16 && blocks.sizes().slice(0, blocks.dim() - 1) == scales.sizes();
    if (!fits)
        fail(ErrorKind::kConfig, name + ": MXFP4 needs uint8 blocks [..., G, 16] and uint8 scales [..., G] of the same "
                                        "leading shape (got blocks " + c10::str(blocks.sizes()) + " " +
                                        c10::toString(blocks.scalar_type()) + ", scales " + c10::str(scales.sizes()) + " " +
                                        c10::toString(scales.scalar_type()) + ")");
    std::vector<int64_t> shape = scales.sizes().vec();
    shape.back() *= 32;
    at::Tensor out = at::empty(shape, blocks.options().dtype(dtype));
    const at::Tensor table = e2m1_values(blocks.device());
    const int64_t slices = blocks.dim() > 2 ? blocks.size(0) : 1;
    for (int64_t i = 0; i < slices; ++i) {
        const at::Tensor b = blocks.dim() > 2 ? blocks[i] : blocks, s = blocks.dim() > 2 ? scales[i] : scales;
        (blocks.dim() > 2 ? out[i] : out).copy_(dequantize_slice(b, s, table).flatten(-2));
    }
    return out;
}

}  // namespace ftl::quant
