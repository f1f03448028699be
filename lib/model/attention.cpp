#include "model/attention.h"

#ifdef FTL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace ftl::model {
namespace {

bool flash_kernels_on(const at::Device& device) {
#ifdef FTL_WITH_CUDA
    return device.is_cuda() && at::cuda::getDeviceProperties(device.index())->major >= 8;
#else
    (void)device;
    return false;
#endif
}

}  // namespace

AttentionPattern attention_pattern(const Batch& batch, std::optional<int64_t> window, const at::Device& device,
                                   at::ScalarType attention_type, int64_t head_dim, bool variable_length) {
    const bool windowed = window && *window < batch.input_ids.size(1);
    AttentionPattern pattern;
    if (!has_padding(batch) && !batch.packed && !windowed) return pattern;  // plain causal: SDPA's is_causal
    const bool sixteen_bit = attention_type == at::kBFloat16 || attention_type == at::kHalf;
    if (variable_length && batch.span_starts.defined() && !windowed && sixteen_bit && head_dim % 8 == 0 && head_dim <= 256 &&
        flash_kernels_on(device)) {
        pattern.span_starts = batch.span_starts;
        pattern.longest_span = batch.longest_span;
        pattern.span_type = attention_type;
        return pattern;
    }
    pattern.mask = attention_mask_for(batch, window);
    return pattern;
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const AttentionPattern& pattern, double scale) {
    const int64_t rows = q.size(0), length = q.size(1);
    if (pattern.span_starts.defined()) {
        // [B, T, n, d] -> [B*T, n, d]: the spans index the flattened tokens.
        auto tokens = [&](const at::Tensor& t) {
            return t.to(pattern.span_type).reshape({rows * length, t.size(2), t.size(3)}).contiguous();
        };
        const at::Tensor out = std::get<0>(at::_flash_attention_forward(
            tokens(q), tokens(k), tokens(v), pattern.span_starts, pattern.span_starts, pattern.longest_span,
            pattern.longest_span, /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false, scale));
        return out.view({rows, length, -1});
    }
    const bool causal = !pattern.mask.defined() && k.size(1) == length;  // a lone new query sees every key
    const at::Tensor attn = at::scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        pattern.mask.defined() ? std::optional<at::Tensor>(pattern.mask) : std::nullopt, /*dropout_p=*/0.0,
        /*is_causal=*/causal, scale, /*enable_gqa=*/k.size(2) != q.size(2));
    return attn.transpose(1, 2).reshape({rows, length, -1});
}

}  // namespace ftl::model
