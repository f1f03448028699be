// `ftlaunch merge`: PEFT's merge_and_unload() written to disk as a model folder transformers
// loads. Every LoRA-targeted linear's weight becomes W + scaling · (B · A) (DoRA: that sum with
// each row rescaled by m / its norm), computed in fp32 and stored in the output dtype (PEFT on CPU casts A and B to fp32 and adds the fp32 delta into W);
// full tensors an adapter carries (PEFT saves embed_tokens and lm_head when the vocabulary was
// resized) replace the base model's; every other tensor is copied (converted when a dtype is
// asked for). Experts' stacks adapted through PEFT's target_parameters merge per expert in the
// base's own layout (peft/merge_experts.h). Tensors are made and written one at a time, so memory
// stays at the largest tensor (a MoE layer's two experts' deltas), not the model: a 70B merge fits
// a small host.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "peft/lora.h"

namespace ftl::peft {

struct MergeOptions {
    std::string model_dir;    // the base model folder (config.json + safetensors)
    std::string adapter_dir;  // a PEFT LoRA adapter folder
    std::string output_dir;   // created; must not be either input
    std::optional<at::ScalarType> dtype;  // float32/bfloat16/float16; default: each tensor keeps its dtype
    size_t max_shard_bytes = 5'000'000'000;  // transformers' default max_shard_size "5GB" (decimal)
};

struct MergeSummary {
    int64_t merged_linears = 0;         // weights that received a LoRA delta
    int64_t replaced_tensors = 0;       // full tensors taken from the adapter
    std::vector<std::string> files;     // the weight files written
};

// Writes output_dir/{model.safetensors | model-0000i-of-0000n.safetensors + index}, config.json
// (dtype and vocab_size updated), and the base's generation and tokenizer files (the adapter
// folder's tokenizer files win when it has them). Throws ftl::Error naming the file and tensor
// for an adapter that does not fit the model (a target that is not in it, wrong shapes).
MergeSummary merge_adapter(const MergeOptions& options);

}  // namespace ftl::peft
