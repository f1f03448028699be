// Activation recomputation ("gradient checkpointing", Chen et al. 2016, as HF enables it per
// decoder layer): a layer runs without keeping its intermediate activations; its backward runs
// it again from the saved input, then back-propagates through that second run. Memory per layer
// drops to its input [B, T, H]; compute rises by one forward per layer.
//
// The second run sees what the first saw: the dropout generator is put back to its state before
// the first run (and restored afterwards, so the stream continues as without recomputation), and
// autocast is set as it was. The gradients are therefore the same as without recomputation.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <vector>

namespace ftl::model {

// out = layer(input, false), recomputed in backward as layer(input, true). `weights`: the tensors
// `layer` reads that may need gradients (those that do get them, accumulated as usual).
// `generator`: the one `layer` draws dropout from, if any. Without grad mode, or when nothing needs
// a gradient, this is layer(input, false).
using RecomputedLayer = std::function<at::Tensor(const at::Tensor& input, bool recomputing)>;
at::Tensor recomputed_in_backward(const RecomputedLayer& layer, const at::Tensor& input,
                                  const std::vector<at::Tensor>& weights, const std::optional<at::Generator>& generator);

}  // namespace ftl::model
