// LoRA targets on a transformers 5 mixture-of-experts model (qwen3_moe, mixtral, gpt_oss), read as
// PEFT 0.21 reads them (peft's convert_peft_config_for_transformers, transformers' MoE target
// mapping and BaseTuner._inject_parameters): the experts' stacks and the router are parameters,
// not nn.Linear modules (mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj [E, H, I],
// mlp.gate.weight [E, H]; gpt_oss: [E, in, out] stacks and mlp.router.weight), adapted through
// PEFT's ParamWrapper when target_parameters names them. On qwen3_moe and mixtral the module names
// that meant them in transformers 4 are mapped onto parameter targets:
//   qwen3_moe gate_proj + up_proj, mixtral w1 + w3  -> gate_up_proj (both or neither; rank and
//                                                      alpha doubled, as two adapters side by side)
//   qwen3_moe down_proj, mixtral w2                 -> down_proj
//   gate                                            -> the router (gate.weight)
// and stop being module targets (so qwen3_moe's dense mlp_only_layers keep no adapter under them);
// "all-linear" means the attention's linears and all three parameters. gpt_oss's experts and router
// were parameters already in transformers 4: no module name maps to them, and only
// target_parameters (--lora_target_parameters, TRL's flag; the OpenAI cookbook's per-layer
// "7.mlp.experts.gate_up_proj") adapts them.
// A parameter's key is its path, model.layers.<i>.mlp.experts.gate_up_proj or
// model.layers.<i>.mlp.gate.weight; an entry of target_parameters adapts every key that equals it or
// ends with "." + entry. ParamWrapper takes no dropout and no DoRA; PEFT raises for either, and so
// does this.
#pragma once

#include <string>
#include <vector>

#include "model/model_config.h"
#include "peft/lora.h"

namespace ftl::peft {

struct MoeTargets {
    // target_parameters after the name mapping: the configured entries, then those the mapped
    // module names add (gate_up_proj, down_proj, gate.weight), each once.
    std::vector<std::string> parameters;
    // The patterns the mapping adds (gate_up_proj at twice r and lora_alpha), as PEFT writes them.
    std::vector<std::pair<std::string, int64_t>> rank_pattern;
    std::vector<std::pair<std::string, double>> alpha_pattern;
    bool all_linear = false;               // every other linear (attention's, dense MLPs' but the mapped names)
    std::vector<std::string> module_names;  // else: names matched against the other linears
    std::vector<std::string> absent;        // names of the Llama family's MLP that this model does not have
};

// Throws ftl::Error(kConfig) naming --lora_target_modules, --lora_target_parameters, --lora_dropout
// or --use_dora for what PEFT refuses: a regex (ftlaunch asks for names here), half of
// gate_up_proj's pair, dropout or DoRA on a parameter target, an entry of target_parameters that
// names no expert stack or router weight of the model.
MoeTargets resolve_moe_targets(const model::DecoderConfig& config, const LoraConfig& lora);

// `lora` as the adapters are drawn and saved: target_parameters and the rank / alpha patterns with
// what the mapping adds.
LoraConfig with_moe_targets(const LoraConfig& lora, const MoeTargets& targets);

// Whether the parameter `key` (model.layers.<i>.mlp.experts.down_proj, ...) is adapted.
bool adapts_parameter(const MoeTargets& targets, const std::string& key);

// The key of layer `layer`'s MoE parameter at `path` inside the layer (mlp.experts.gate_up_proj,
// mlp.gate): the module path, with ".weight" for the router (a module's weight; the experts'
// stacks are parameters of their own).
std::string moe_parameter_key(const model::DecoderConfig& config, size_t layer, const std::string& path, bool stacked);

// The module path inside a layer that PEFT names an experts' stack adapter after, its nested
// ParamWrappers: mlp.experts for the outer one (down_proj, or gate_up_proj alone),
// mlp.experts.base_layer for gate_up_proj inside down_proj's (`down_adapted`).
std::string experts_adapter_module(bool gate_up, bool down_adapted);

// Whether `leaf` (a linear's last path component) is a name the MoE mapping takes over.
bool is_mapped_moe_name(const model::DecoderConfig& config, const std::string& leaf);
// Whether a linear module (not one of the MoE parameters) named `leaf` is adapted: named, or
// all-linear, and not a name the mapping took over.
bool adapts_module(const model::DecoderConfig& config, const MoeTargets& targets, const std::string& leaf);

}  // namespace ftl::peft
