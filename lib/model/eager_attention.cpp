#include "model/eager_attention.h"

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

// One block's scores [B, n, t, S] in the inputs' type: capped (cap * tanh(q k^T * scale / cap), or
// uncapped) and, separately, masked.
struct BlockScores {
    at::Tensor capped, masked;
};

BlockScores block_scores(const at::Tensor& query_block, const at::Tensor& key, const at::Tensor& visible_block,
                         double scale, std::optional<double> cap) {
    const at::Tensor scores = at::matmul(query_block, key.transpose(2, 3)) * scale;
    BlockScores out;
    out.capped = cap ? at::tanh(scores / *cap) * *cap : scores;
    out.masked = out.capped.masked_fill(visible_block.logical_not(), lowest_finite(out.capped.scalar_type()));
    return out;
}

// The sinks as one more column of a block's scores: [B, n, t, 1] (in the sinks' type; cat promotes).
at::Tensor sink_column(const at::Tensor& sinks, const at::Tensor& masked) {
    return sinks.view({1, -1, 1, 1}).expand({masked.size(0), -1, masked.size(2), 1});
}

struct EagerAttention : public torch::autograd::Function<EagerAttention> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                              const at::Tensor& visible, const std::optional<at::Tensor>& maybe_sinks, double scale,
                              std::optional<double> cap, int64_t block) {
        const at::Tensor sinks = maybe_sinks.value_or(at::Tensor());
        const int64_t length = query.size(2);
        at::Tensor out = at::empty_like(query, at::MemoryFormat::Contiguous);
        at::Tensor lse = at::empty({query.size(0), query.size(1), length}, query.options().dtype(at::kFloat));
        for (int64_t begin = 0; begin < length; begin += block) {
            const int64_t n = std::min(block, length - begin);
            const BlockScores s = block_scores(query.narrow(2, begin, n), key, visible.narrow(2, begin, n), scale, cap);
            const at::Tensor logits = sinks.defined() ? at::cat({s.masked, sink_column(sinks, s.masked)}, -1) : s.masked;
            at::Tensor weights;
            if (sinks.defined()) {  // as GptOssAttention: the row max subtracted in the scores' type
                const at::Tensor shifted = logits - std::get<0>(logits.max(-1, /*keepdim=*/true));
                weights = at::softmax(shifted, -1, at::kFloat).narrow(-1, 0, s.masked.size(-1));
            } else {
                weights = at::softmax(logits, -1, at::kFloat);  // as transformers: fp32, then cast
            }
            out.narrow(2, begin, n).copy_(at::matmul(weights.to(query.scalar_type()), value));
            lse.narrow(2, begin, n).copy_(at::logsumexp(logits.to(at::kFloat), -1));
        }
        ctx->saved_data["scale"] = scale;
        ctx->saved_data["cap"] = cap ? *cap : 0.0;
        ctx->saved_data["capped"] = cap.has_value();
        ctx->saved_data["block"] = block;
        ctx->save_for_backward({query, key, value, visible, lse, sinks});
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const double scale = ctx->saved_data["scale"].toDouble();
        const std::optional<double> cap =
            ctx->saved_data["capped"].toBool() ? std::optional<double>(ctx->saved_data["cap"].toDouble()) : std::nullopt;
        const int64_t block = ctx->saved_data["block"].toInt();
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &query = saved[0], &key = saved[1], &value = saved[2], &visible = saved[3], &lse = saved[4];
        const at::Tensor& sinks = saved[5];
        const at::Tensor grad_out = grad_outputs[0].to(query.scalar_type());
        const at::ScalarType type = query.scalar_type();
        at::Tensor grad_query = at::empty_like(query, at::MemoryFormat::Contiguous);
        // Summed over the query blocks in fp32, cast once at the end.
        at::Tensor grad_key = at::zeros(key.sizes(), key.options().dtype(at::kFloat));
        at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(at::kFloat));
        at::Tensor grad_sinks = sinks.defined() ? at::zeros(sinks.sizes(), sinks.options().dtype(at::kFloat)) : at::Tensor();
        const int64_t length = query.size(2);
        for (int64_t begin = 0; begin < length; begin += block) {
            const int64_t n = std::min(block, length - begin);
            const at::Tensor query_block = query.narrow(2, begin, n), grad_block = grad_out.narrow(2, begin, n);
            const at::Tensor block_lse = lse.narrow(2, begin, n).unsqueeze(-1);
            const BlockScores s = block_scores(query_block, key, visible.narrow(2, begin, n), scale, cap);
            // p = softmax(masked scores), from the saved log-sum-exp ([B, n, t, S] fp32).
            const at::Tensor p = (s.masked.to(at::kFloat) - block_lse).exp_();
            grad_value.add_(at::matmul(p.to(type).transpose(2, 3), grad_block).to(at::kFloat));
            // Softmax backward: dS = p * (dP - sum(dP * p)), dP = dO v^T (a sink's dP is 0).
            const at::Tensor grad_p = at::matmul(grad_block, value.transpose(2, 3)).to(at::kFloat);
            const at::Tensor weighted = (grad_p * p).sum(-1, /*keepdim=*/true);
            at::Tensor grad_scores = p * (grad_p - weighted);
            if (sinks.defined()) {
                const at::Tensor p_sink = (sink_column(sinks, s.masked).to(at::kFloat) - block_lse).exp_();
                grad_sinks.sub_((p_sink * weighted).sum({0, 2, 3}));
            }
            // Through the cap: d(cap * tanh(x / cap))/dx = 1 - tanh^2 = 1 - (capped / cap)^2, from the
            // unmasked values (masked entries have p = 0 and so no gradient).
            if (cap) grad_scores.mul_(1.0 - (s.capped.to(at::kFloat) / *cap).square());
            const at::Tensor grad_raw = (grad_scores * scale).to(type);
            grad_query.narrow(2, begin, n).copy_(at::matmul(grad_raw, key));
            grad_key.add_(at::matmul(grad_raw.transpose(2, 3), query_block).to(at::kFloat));
        }
        return {grad_query,
                grad_key.to(key.scalar_type()),
                grad_value.to(value.scalar_type()),
                at::Tensor(),
                sinks.defined() ? grad_sinks.to(sinks.scalar_type()) : at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor()};
    }
};

}  // namespace

at::Tensor eager_attention_blocks(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                  const at::Tensor& visible, double scale, const EagerScores& scores,
                                  int64_t block_queries) {
    if (block_queries <= 0) {
        constexpr int64_t kBlockBytes = int64_t{64} << 20;
        const int64_t row_bytes = 4 * std::max<int64_t>(1, query.size(0) * query.size(1) * key.size(2));
        block_queries = std::max<int64_t>(16, kBlockBytes / row_bytes);
    }
    const std::optional<at::Tensor> sinks = scores.sinks.defined() ? std::optional<at::Tensor>(scores.sinks) : std::nullopt;
    return EagerAttention::apply(query, key, value, visible, sinks, scale, scores.cap, block_queries);
}

}  // namespace ftl::model
