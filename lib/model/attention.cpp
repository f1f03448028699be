#include "model/attention.h"

#include "util/error.h"

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

// transformers' eager attention with Gemma 2's score capping or gpt-oss's sinks (SDPA and ATen's
// flash kernels take neither), a block of queries at a time (eager_attention.h).
at::Tensor eager_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionPattern& pattern,
                           double scale, const EagerScores& eager) {
    const int64_t rows = q.size(0), length = q.size(1), keys = k.size(1), groups = q.size(2) / k.size(2);
    const at::Tensor query = q.transpose(1, 2);                               // [B, n_h, T, d]
    const at::Tensor key = k.transpose(1, 2).repeat_interleave(groups, 1);    // [B, n_h, S, d], as repeat_kv
    const at::Tensor value = v.transpose(1, 2).repeat_interleave(groups, 1);  // [B, n_h, S, d]
    at::Tensor visible = pattern.mask;  // [B|1, 1, T, S]
    if (!visible.defined()) {           // plain causal; with cached keys the queries are the last T
        const auto positions = at::TensorOptions().dtype(at::kLong).device(q.device());
        visible = (at::arange(keys, positions).unsqueeze(0) <= at::arange(length, positions).unsqueeze(1) + (keys - length))
                      .view({1, 1, length, keys});
    }
    return eager_attention_blocks(query, key, value, visible, scale, eager).transpose(1, 2).reshape({rows, length, -1});
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
                            const AttentionPattern& pattern, double scale, const EagerScores& eager) {
    const int64_t rows = q.size(0), length = q.size(1);
    if (eager.cap || eager.sinks.defined()) {
        if (pattern.span_starts.defined())
            fail(ErrorKind::kInternal, "causal_attention: capped scores and sinks need a mask, not variable-length spans");
        return eager_attention(q, k, v, pattern, scale, eager);
    }
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
