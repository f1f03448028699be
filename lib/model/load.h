// Building a CausalLM from a model folder (config.json + safetensors), as from_pretrained does.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "model/decoder.h"

namespace ftl::model {

struct LoadOptions {
    std::optional<at::ScalarType> dtype;  // default: config.json's dtype, else float32
    at::Device device = at::kCPU;
    // Leave every weight a zero-copy view of the mapped file (CPU, the file's dtype; dtype and
    // device above are ignored): for a caller that converts slices itself (ZeRO-3 reads only the
    // pages of its own slices).
    bool keep_mapped = false;
    // Frozen weights a mixed-precision run only ever multiplies in its autocast type: the decoder
    // layers' linear weights and biases (`linear_dtype`) and an untied lm_head (`head_dtype`)
    // load directly in that type (half the bytes of fp32, no cast per use; autocast would round
    // them to the same values). Ignored with keep_mapped.
    std::optional<at::ScalarType> linear_dtype;
    std::optional<at::ScalarType> head_dtype;
    // With keep_mapped, for frozen experts (LoRA): a hub checkpoint's per-expert tensors stay
    // mapped (DecoderLayerWeights::gate_up_pieces, down_pieces) and each layer's stacks are meta
    // tensors of their shape until stack_experts(layer) makes them, as ZeRO-3's partitioning or
    // quantisation reaches the layer: the experts never exist whole in host memory, one layer's
    // at most (eager stacking held every layer's at once).
    bool stack_experts_late = false;
};

struct LoadedModel {
    CausalLM model;
    std::vector<std::string> unused_tensors;  // in the checkpoint but not part of the model
};

// Every weight is checked against the shape the config implies: a missing tensor or a wrong shape
// is ftl::Error(kConfig) naming the tensor, the file and both shapes.
LoadedModel load_causal_lm(const std::string& model_dir, const LoadOptions& options = {});

// A gemma3 checkpoint's tensors outside its language model (vision tower, projector), as mapped
// views of `model_dir`'s files under their own names: what a full fine-tune writes back as it
// found them (the tower never runs, so transformers' training leaves them unchanged too).
std::vector<std::pair<std::string, at::Tensor>> tensors_beside_language_model(const std::string& model_dir);

// Stacks a layer loaded with LoadOptions::stack_experts_late (its pieces copied into the stacks,
// then dropped); nothing for a layer already stacked.
void stack_experts(DecoderLayerWeights& layer);

}  // namespace ftl::model
