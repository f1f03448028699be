#include "model/experts.h"

#include <tuple>
#include <vector>

#include "model/router_balance.h"
#include "util/error.h"

namespace ftl::model {

at::Tensor expert_linear(const Linear& stack, int64_t expert, const at::Tensor& x) {
    const at::Tensor y = stack.bias.defined() ? at::linear(x, stack.weight.select(0, expert), stack.bias.select(0, expert))
                                              : at::linear(x, stack.weight.select(0, expert));
    if (!stack.adapter) return y;
    const LowRankAdapter& a = *stack.adapter;
    const int64_t experts = stack.weight.size(0), rank = a.A.size(0) / experts;
    const at::Tensor a_e = a.A.view({experts, rank, a.A.size(1)}).select(0, expert);  // [r, in]
    const at::Tensor b_e = a.B.view({a.B.size(0), rank, experts}).select(2, expert);  // [out, r]
    const at::Tensor input = x.to(a.A.scalar_type());
    return y + (at::linear(at::linear(input, a_e), b_e) * a.scaling).to(y.scalar_type());
}

at::Tensor clamped_swiglu(const at::Tensor& gate_up, double alpha, double limit) {
    const int64_t width = gate_up.size(-1) / 2;
    const at::Tensor pairs = gate_up.unflatten(-1, {width, 2});
    const at::Tensor gate = pairs.select(-1, 0).clamp_max(limit), up = pairs.select(-1, 1).clamp(-limit, limit);
    return (up + 1) * (gate * at::sigmoid(gate * alpha));
}

at::Tensor experts_forward(const DecoderLayerWeights& layer, const MoeConfig& moe, const at::Tensor& y,
                           GatedActivationFn gated, const ForwardOptions& options) {
    if (layer.experts_down.weight.is_meta())
        fail(ErrorKind::kInternal, "experts_forward: the layer's experts were loaded to be stacked later (model::stack_experts)");
    const int64_t hidden = y.size(-1), k = moe.experts_per_token;
    const at::Tensor tokens = y.reshape({-1, hidden});                      // [N, H]
    const at::Tensor logits = apply_linear(layer.router, tokens, options);  // [N, E]
    at::Tensor weights, chosen;                                             // [N, k] each
    if (moe.softmax_after_top_k) {  // gpt_oss: the k largest logits, softmaxed in their type
        std::tie(weights, chosen) = at::topk(logits, k, -1);
        weights = at::softmax(weights, -1, logits.scalar_type());
    } else {
        std::tie(weights, chosen) = at::topk(at::softmax(logits, -1, at::kFloat), k, -1);
        if (moe.normalize_top_k) weights = weights / weights.sum(-1, /*keepdim=*/true);
        if (moe.weights_in_logits_type) weights = weights.to(logits.scalar_type());
    }
    if (options.router_balance) {  // load_balancing_loss_func's probabilities: softmax in the logits' type
        const at::Tensor probs = at::softmax(logits, -1).to(at::kFloat);
        if (!options.recomputing) options.router_balance->add_layer(probs);
        weights = options.router_balance->carry_gradient(weights, probs);
    }

    // (token, slot) pairs sorted by expert: rows [S = N*k, H], expert e's rows contiguous.
    const at::Tensor slots = chosen.reshape({-1});
    const at::Tensor order = std::get<1>(at::sort(slots, /*stable=*/std::optional<bool>(true), /*dim=*/0));
    const at::Tensor counts = at::bincount(slots, {}, moe.num_experts).cpu();
    const at::Tensor rows = tokens.index_select(0, at::floor_divide(order, k));
    std::vector<at::Tensor> outputs;
    int64_t start = 0;
    const int64_t* count = counts.data_ptr<int64_t>();
    for (int64_t e = 0; e < moe.num_experts; ++e) {
        if (count[e] == 0) continue;
        const at::Tensor x = rows.narrow(0, start, count[e]);
        const at::Tensor gate_up = expert_linear(layer.experts_gate_up, e, x);  // [n, 2I], gate first or interleaved
        const int64_t width = gate_up.size(-1) / 2;
        const at::Tensor activated =
            moe.swiglu_limit ? clamped_swiglu(gate_up, moe.swiglu_alpha, *moe.swiglu_limit)
                             : gated(gate_up.narrow(-1, 0, width), gate_up.narrow(-1, width, width));
        outputs.push_back(expert_linear(layer.experts_down, e, activated));
        start += count[e];
    }
    // Weighted (mixtral's fp32 weights promote the product), back in (token, slot) order, summed.
    const at::Tensor weighted = at::cat(outputs) * weights.reshape({-1}).index_select(0, order).unsqueeze(-1);
    const at::Tensor back = at::empty_like(order).index_copy_(0, order, at::arange(order.size(0), order.options()));
    return weighted.index_select(0, back).view({-1, k, hidden}).sum(1).to(y.scalar_type()).view(y.sizes());
}

}  // namespace ftl::model
