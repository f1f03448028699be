#include "model/recompute.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

namespace ftl::model {
namespace {

using torch::autograd::variable_list;

// The autograd node of one recomputed layer: its next edges are the input's and each weight's.
struct RecomputeBackward : public torch::autograd::Node {
    RecomputedLayer layer;
    at::Tensor input;  // detached copy of the layer's input
    bool input_needs_grad = false;
    std::vector<at::Tensor> weights;  // those that need gradients, in edge order after the input
    std::optional<at::Generator> generator;
    at::Tensor generator_state;  // before the first run
    at::DeviceType autocast_device = at::kCPU;
    bool autocast_enabled = false;
    at::ScalarType autocast_dtype = at::kBFloat16;

    variable_list apply(variable_list&& grads) override {
        at::AutoGradMode grad_mode(true);
        const bool autocast_before = at::autocast::is_autocast_enabled(autocast_device);
        const at::ScalarType dtype_before = at::autocast::get_autocast_dtype(autocast_device);
        at::autocast::set_autocast_enabled(autocast_device, autocast_enabled);
        at::autocast::set_autocast_dtype(autocast_device, autocast_dtype);
        at::Tensor current_state;
        if (generator) {
            current_state = generator->get_state();
            generator->set_state(generator_state);
        }
        at::Tensor x = input.detach().requires_grad_(input_needs_grad);
        at::Tensor out = layer(x, /*recomputing=*/true);
        if (generator) generator->set_state(current_state);
        at::autocast::set_autocast_enabled(autocast_device, autocast_before);
        at::autocast::set_autocast_dtype(autocast_device, dtype_before);

        variable_list sources;
        if (input_needs_grad) sources.push_back(x);
        sources.insert(sources.end(), weights.begin(), weights.end());
        variable_list found = torch::autograd::grad({out}, sources, {grads.at(0)}, /*retain_graph=*/false,
                                                    /*create_graph=*/false, /*allow_unused=*/true);
        variable_list result;
        result.push_back(input_needs_grad ? found.at(0) : at::Tensor());
        for (size_t i = 0; i < weights.size(); ++i) result.push_back(found.at(i + (input_needs_grad ? 1 : 0)));
        return result;
    }
};

}  // namespace

at::Tensor recomputed_in_backward(const RecomputedLayer& layer, const at::Tensor& input,
                                  const std::vector<at::Tensor>& weights, const std::optional<at::Generator>& generator) {
    std::vector<at::Tensor> trainable;
    for (const auto& w : weights)
        if (w.defined() && w.requires_grad()) trainable.push_back(w);
    if (!at::GradMode::is_enabled() || (trainable.empty() && !input.requires_grad())) return layer(input, /*recomputing=*/false);

    auto node = std::shared_ptr<RecomputeBackward>(new RecomputeBackward(), torch::autograd::deleteNode);
    node->layer = layer;
    node->input = input.detach();
    node->input_needs_grad = input.requires_grad();
    node->weights = trainable;
    node->generator = generator;
    if (generator) node->generator_state = generator->get_state();
    node->autocast_device = input.device().type();
    node->autocast_enabled = at::autocast::is_autocast_enabled(node->autocast_device);
    node->autocast_dtype = at::autocast::get_autocast_dtype(node->autocast_device);

    at::Tensor out;
    {
        at::NoGradGuard no_grad;
        out = layer(input, /*recomputing=*/false);
    }
    variable_list edge_sources{input};
    edge_sources.insert(edge_sources.end(), trainable.begin(), trainable.end());
    node->set_next_edges(torch::autograd::collect_next_edges(edge_sources));
    torch::autograd::create_gradient_edge(out, node);
    return out;
}

}  // namespace ftl::model
