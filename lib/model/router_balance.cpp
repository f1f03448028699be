#include "model/router_balance.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "util/error.h"

namespace ftl::model {
namespace {

using torch::autograd::variable_list;

// Backward of carry_gradient: the output's gradient passes through; the probabilities [N, E]
// receive the per-expert constant on every real row.
struct CarryBackward : public torch::autograd::Node {
    std::shared_ptr<at::Tensor> row_gradient;  // [E]
    at::Tensor mask;                           // [N] or undefined
    std::vector<int64_t> probs_shape;

    variable_list apply(variable_list&& grads) override {
        if (!row_gradient->defined())
            fail(ErrorKind::kInternal, "RouterBalance: backward ran before set_loss_weight");
        at::Tensor probs_grad = row_gradient->unsqueeze(0).expand(probs_shape);
        if (mask.defined()) probs_grad = probs_grad * mask.unsqueeze(1);
        return {grads.at(0), probs_grad.contiguous()};
    }
};

}  // namespace

RouterBalance::RouterBalance(int64_t num_experts, int64_t top_k, double coefficient)
    : experts_(num_experts), top_k_(top_k), coefficient_(coefficient) {}

void RouterBalance::start_batch(const at::Tensor& row_mask, double real_rows) {
    mask_ = row_mask.defined() ? row_mask.reshape({-1}).to(at::kFloat) : at::Tensor();
    real_rows_ = real_rows;
    layers_ = 0;
    counts_ = at::Tensor();
    probability_sums_ = at::Tensor();
    row_gradient_ = std::make_shared<at::Tensor>();
}

void RouterBalance::add_layer(const at::Tensor& probs) {
    at::NoGradGuard no_grad;
    const at::Tensor p = probs.detach();
    const at::Tensor chosen = std::get<1>(at::topk(p, top_k_, -1));  // [N, k]
    at::Tensor weights = mask_.defined() ? mask_.unsqueeze(1).expand(chosen.sizes()) : at::ones(chosen.sizes(), p.options());
    const at::Tensor counts = at::zeros({experts_}, p.options()).scatter_add_(0, chosen.reshape({-1}), weights.reshape({-1}));
    const at::Tensor sums = (mask_.defined() ? p * mask_.unsqueeze(1) : p).sum(0);
    counts_ = counts_.defined() ? counts_ + counts : counts;
    probability_sums_ = probability_sums_.defined() ? probability_sums_ + sums : sums;
    ++layers_;
}

at::Tensor RouterBalance::loss() const {
    if (!counts_.defined()) fail(ErrorKind::kInternal, "RouterBalance::loss: no MoE layer ran");
    const double rows = real_rows_ * static_cast<double>(layers_);
    return (counts_ / rows * (probability_sums_ / rows)).sum() * static_cast<double>(experts_);
}

void RouterBalance::set_loss_weight(double weight, const at::Tensor& loss_scale) {
    const double rows = real_rows_ * static_cast<double>(layers_);
    *row_gradient_ = counts_ * (weight * static_cast<double>(experts_) / (rows * rows));
    if (loss_scale.defined()) *row_gradient_ = *row_gradient_ * loss_scale.to(at::kFloat);
}

at::Tensor RouterBalance::carry_gradient(const at::Tensor& output, const at::Tensor& probs) const {
    if (!at::GradMode::is_enabled() || !probs.requires_grad()) return output;
    auto node = std::shared_ptr<CarryBackward>(new CarryBackward(), torch::autograd::deleteNode);
    node->row_gradient = row_gradient_;
    node->mask = mask_;
    node->probs_shape = probs.sizes().vec();
    node->set_next_edges(torch::autograd::collect_next_edges(output, probs));
    at::Tensor carried;
    {
        at::NoGradGuard no_grad;
        carried = output.clone();  // a tensor of its own (not a view) to hang the node on
    }
    torch::autograd::create_gradient_edge(carried, node);
    return carried;
}

}  // namespace ftl::model
