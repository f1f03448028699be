// `ftlaunch merge` for the adapters PEFT's target_parameters put on a mixture-of-experts model's
// experts (ParamWrapper on mlp.experts.gate_up_proj / down_proj; peft/moe_lora.h): each stack
// becomes W_e + s · B_e A_e per expert (A [E·r, in] read as [E, r, in], B [out, r·E] as
// [out, r, E]; PEFT's get_delta_weight), written in the base checkpoint's own layout — transformers
// 5's stacks, the hub's per-expert tensors (qwen3_moe, mixtral: model::checkpoint_weights names
// them), gpt_oss's [E, in, out] stacks. A gpt_oss base holding its experts as MXFP4 is written with
// every stack in floating point (as PEFT's merge of the dequantised model saves it). The routers'
// adapters are plain LoRA pairs; `checkpoint_name` gives their base name (mixtral's
// block_sparse_moe.gate.weight).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/model_config.h"
#include "peft/lora.h"

namespace ftl::peft {

class ExpertMerge {
  public:
    // `lora`: the adapter's config (target_parameters non-empty); `model_dir`'s config.json must be a
    // MoE model's. Throws ftl::Error(kConfig) naming the adapter tensor or base tensor that does not fit.
    ExpertMerge(const std::string& model_dir, const LoraConfig& lora, const io::Checkpoint& base,
                const io::Checkpoint& adapter);

    // Whether an adapter tensor is one of the experts' LoRA pairs (merged here, not as a linear's).
    bool owns_adapter_tensor(const std::string& name) const { return adapter_tensors_.count(name) != 0; }
    // A tensor named as transformers holds it (model.layers.0.mlp.gate.weight) under the base's name.
    std::string checkpoint_name(const std::string& name) const;

    // What becomes of base tensor `name`: nullopt when it is not an expert stack's; else the output
    // name and shape ("" to drop it: an MXFP4 stack's scales).
    struct Output {
        std::string name;
        std::vector<int64_t> shape;
        bool adapted = false;  // receives a delta (else only dequantised)
    };
    std::optional<Output> output_of(const std::string& name) const;
    // The merged fp32 tensor written for base tensor `name` (output_of(name) not nullopt, not dropped).
    at::Tensor merged(const std::string& name);
    // Whether MXFP4 stacks are written in floating point (config.json's quantization_config goes),
    // and in which type when no --torch_dtype is asked for (config.json's, else bfloat16).
    bool dequantizes() const { return dequantize_; }
    at::ScalarType dequantized_dtype() const;

  private:
    struct Stack {
        std::string name;            // as transformers holds it: model.layers.<i>.mlp.experts.gate_up_proj
        std::vector<int64_t> shape;  // [E, out, in]
        std::string lora_a, lora_b;  // empty when not adapted
        double scaling = 0.0;
    };
    at::Tensor delta(size_t stack);  // fp32 [E, out, in], zeros when not adapted
    model::DecoderConfig config_;
    const io::Checkpoint& base_;
    const io::Checkpoint& adapter_;
    std::vector<Stack> stacks_;
    std::map<std::string, size_t> stack_of_;  // base tensor name -> stack
    std::set<std::string> adapter_tensors_;
    bool dequantize_ = false;
    std::map<size_t, at::Tensor> cached_;  // the deltas of the last layer's stacks
};

}  // namespace ftl::peft
