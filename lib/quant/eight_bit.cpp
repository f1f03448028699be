#include "quant/eight_bit.h"

#include <ATen/core/grad_mode.h>

#include <vector>

#include "quant/blockwise.h"

namespace ftl::quant {

at::Tensor dynamic_map(bool is_signed) {
    // Exponents 10^-6 .. 10^0, each with 2^i (signed: of both signs) or 2^(i+1) evenly spaced
    // fractions, then 0 and 1.
    std::vector<at::Tensor> values;
    const double powers[] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    for (int i = 0; i < 7; ++i) {
        const int64_t fractions = int64_t{1} << (is_signed ? i : i + 1);
        const at::Tensor bounds = at::linspace(0.1, 1.0, fractions + 1, at::kFloat);
        const at::Tensor means = (bounds.narrow(0, 0, fractions) + bounds.narrow(0, 1, fractions)) / 2.0;
        values.push_back(means * powers[i]);
        if (is_signed) values.push_back(means * -powers[i]);
    }
    values.push_back(at::tensor({0.0f, 1.0f}, at::kFloat));
    return std::get<0>(at::sort(at::cat(values)));
}

EightBitBlockwise::EightBitBlockwise(const at::Tensor& code, int64_t blocksize, const at::Device& device)
    : blocksize_(blocksize) {
    const at::Tensor host = code.to(at::kCPU, at::kFloat).contiguous();
    const EightBitLut lut = eight_bit_lut(host.data_ptr<float>());
    code_ = host.to(device);
    lut_ = at::tensor(std::vector<int64_t>(lut.begin(), lut.end()), at::kLong).to(device);
}

void EightBitBlockwise::quantize(const at::Tensor& x, at::Tensor& codes, at::Tensor& absmax) const {
    at::NoGradGuard no_grad;
    const int64_t n = x.numel();
    const int64_t blocks = this->blocks(n);
    // Zeros pad the last block: they change neither its absmax nor its other codes.
    at::Tensor padded = at::constant_pad_nd(x.reshape({-1}), {0, blocks * blocksize_ - n}).view({blocks, blocksize_});
    absmax.copy_(padded.abs().amax(1));
    // A zero block's codes are 0 (below); its inverse is set to 0 so that no NaN reaches the bins.
    const at::Tensor inverse = at::reciprocal(absmax).masked_fill_(absmax == 0, 0.0).unsqueeze(1);
    const at::Tensor normed = at::clamp(padded * inverse, -1.0, 1.0);
    const at::Tensor position = ((normed + 1.0) * 0.5) * 65535.0;
    const at::Tensor bins = (position + 0.5).to(at::kLong);  // truncation: position + 0.5 >= 0
    at::Tensor index = lut_.index_select(0, bins.reshape({-1})).view({blocks, blocksize_});
    index.masked_fill_((absmax == 0).unsqueeze(1), 0);
    codes.view({-1}).copy_(index.view({-1}).narrow(0, 0, n));
}

at::Tensor EightBitBlockwise::dequantize(const at::Tensor& codes, const at::Tensor& absmax) const {
    at::NoGradGuard no_grad;
    const int64_t n = codes.numel();
    const int64_t blocks = this->blocks(n);
    const at::Tensor values = code_.index_select(0, codes.reshape({-1}).to(at::kLong));
    const at::Tensor padded = at::constant_pad_nd(values, {0, blocks * blocksize_ - n}).view({blocks, blocksize_});
    return (padded * absmax.unsqueeze(1)).view({-1}).narrow(0, 0, n).view(codes.sizes());
}

}  // namespace ftl::quant
