#include "model/capped_attention.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>

namespace ftl::model {

double lowest_finite(at::ScalarType type) {
    switch (type) {
        case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
        case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
        case at::kDouble: return std::numeric_limits<double>::lowest();
        default: return std::numeric_limits<float>::lowest();
    }
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One block's scores [B, n, t, S] in the inputs' type: capped (cap * tanh(q k^T * scale / cap))
// and, separately, masked.
struct BlockScores {
    at::Tensor capped, masked;
};

BlockScores block_scores(const at::Tensor& query_block, const at::Tensor& key, const at::Tensor& visible_block,
                         double scale, double cap) {
    const at::Tensor scores = at::matmul(query_block, key.transpose(2, 3)) * scale;
    BlockScores out;
    out.capped = at::tanh(scores / cap) * cap;
    out.masked = out.capped.masked_fill(visible_block.logical_not(), lowest_finite(out.capped.scalar_type()));
    return out;
}

struct CappedAttention : public torch::autograd::Function<CappedAttention> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                              const at::Tensor& visible, double scale, double cap, int64_t block) {
        const int64_t length = query.size(2);
        at::Tensor out = at::empty_like(query, at::MemoryFormat::Contiguous);
        at::Tensor lse = at::empty({query.size(0), query.size(1), length}, query.options().dtype(at::kFloat));
        for (int64_t begin = 0; begin < length; begin += block) {
            const int64_t n = std::min(block, length - begin);
            const BlockScores s = block_scores(query.narrow(2, begin, n), key, visible.narrow(2, begin, n), scale, cap);
            const at::Tensor weights = at::softmax(s.masked, -1, at::kFloat);  // as transformers: fp32, then cast
            out.narrow(2, begin, n).copy_(at::matmul(weights.to(query.scalar_type()), value));
            lse.narrow(2, begin, n).copy_(at::logsumexp(s.masked.to(at::kFloat), -1));
        }
        ctx->saved_data["scale"] = scale;
        ctx->saved_data["cap"] = cap;
        ctx->saved_data["block"] = block;
        ctx->save_for_backward({query, key, value, visible, lse});
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const double scale = ctx->saved_data["scale"].toDouble(), cap = ctx->saved_data["cap"].toDouble();
        const int64_t block = ctx->saved_data["block"].toInt();
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &query = saved[0], &key = saved[1], &value = saved[2], &visible = saved[3], &lse = saved[4];
        const at::Tensor grad_out = grad_outputs[0].to(query.scalar_type());
        const at::ScalarType type = query.scalar_type();
        at::Tensor grad_query = at::empty_like(query, at::MemoryFormat::Contiguous);
        // Summed over the query blocks in fp32, cast once at the end.
        at::Tensor grad_key = at::zeros(key.sizes(), key.options().dtype(at::kFloat));
        at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(at::kFloat));
        const int64_t length = query.size(2);
        for (int64_t begin = 0; begin < length; begin += block) {
            const int64_t n = std::min(block, length - begin);
            const at::Tensor query_block = query.narrow(2, begin, n), grad_block = grad_out.narrow(2, begin, n);
            const BlockScores s = block_scores(query_block, key, visible.narrow(2, begin, n), scale, cap);
            // p = softmax(masked scores), from the saved log-sum-exp ([B, n, t, S] fp32).
            const at::Tensor p = (s.masked.to(at::kFloat) - lse.narrow(2, begin, n).unsqueeze(-1)).exp_();
            grad_value.add_(at::matmul(p.to(type).transpose(2, 3), grad_block).to(at::kFloat));
            // Softmax backward: dS = p * (dP - sum(dP * p)), dP = dO v^T.
            const at::Tensor grad_p = at::matmul(grad_block, value.transpose(2, 3)).to(at::kFloat);
            at::Tensor grad_scores = p * (grad_p - (grad_p * p).sum(-1, /*keepdim=*/true));
            // Through the cap: d(cap * tanh(x / cap))/dx = 1 - tanh^2 = 1 - (capped / cap)^2, from the
            // unmasked values (masked entries have p = 0 and so no gradient).
            grad_scores.mul_(1.0 - (s.capped.to(at::kFloat) / cap).square());
            const at::Tensor grad_raw = (grad_scores * scale).to(type);
            grad_query.narrow(2, begin, n).copy_(at::matmul(grad_raw, key));
            grad_key.add_(at::matmul(grad_raw.transpose(2, 3), query_block).to(at::kFloat));
        }
        return {grad_query, grad_key.to(key.scalar_type()), grad_value.to(value.scalar_type()), at::Tensor(), at::Tensor(),
                at::Tensor(), at::Tensor()};
    }
};

}  // namespace

at::Tensor capped_attention_blocks(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                   const at::Tensor& visible, double scale, double cap, int64_t block_queries) {
    if (block_queries <= 0) {
        constexpr int64_t kBlockBytes = int64_t{64} << 20;
        const int64_t row_bytes = 4 * std::max<int64_t>(1, query.size(0) * query.size(1) * key.size(2));
        block_queries = std::max<int64_t>(16, kBlockBytes / row_bytes);
    }
    return CappedAttention::apply(query, key, value, visible, scale, cap, block_queries);
}

}  // namespace ftl::model
