// LoRA targets on a transformers 5 mixture-of-experts model (qwen3_moe, mixtral), read as PEFT 0.21
// reads them (peft's convert_peft_config_for_transformers and transformers' MoE target mapping):
// the experts' linears and the router are no longer nn.Linear modules but parameters
// (mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj [E, H, I], mlp.gate.weight [E, H]), so
// the names that meant them in transformers 4 become parameter targets (PEFT's ParamWrapper):
//   qwen3_moe gate_proj + up_proj, mixtral w1 + w3  -> gate_up_proj (both or neither; rank and
//                                                      alpha doubled, as two adapters side by side)
//   qwen3_moe down_proj, mixtral w2                 -> down_proj
//   gate                                            -> the router (gate.weight)
// and are no longer module targets (so qwen3_moe's dense mlp_only_layers keep no adapter under
// them). "all-linear" means the attention's linears and all three parameters. The parameter
// names PEFT writes in adapter_config.json's target_parameters (gate_up_proj, down_proj,
// gate.weight; LoraConfig::target_parameters) name them directly.
// ParamWrapper takes no dropout and no DoRA; PEFT raises for either, and so does this.
#pragma once

#include <string>
#include <vector>

#include "model/model_config.h"
#include "peft/lora.h"

namespace ftl::peft {

struct MoeTargets {
    bool gate_up = false, down = false, router = false;  // adapted in every MoE layer
    bool all_linear = false;                             // every other linear (attention's, dense MLPs' but the mapped names)
    std::vector<std::string> module_names;                // else: names matched against the other linears
    std::vector<std::string> absent;                      // names of the Llama family's MLP that mixtral does not have
};

// Throws ftl::Error(kConfig) naming --lora_target_modules, --lora_dropout or --use_dora for what PEFT
// refuses: a regex (ftlaunch asks for names here), half of gate_up_proj's pair, dropout or DoRA on a
// parameter target.
MoeTargets resolve_moe_targets(const model::DecoderConfig& config, const LoraConfig& lora);

// Whether `leaf` (a linear's last path component) is a name the MoE mapping takes over.
bool is_mapped_moe_name(const model::DecoderConfig& config, const std::string& leaf);
// Whether a linear module (not one of the MoE parameters) named `leaf` is adapted: named, or
// all-linear, and not a name the mapping took over.
bool adapts_module(const model::DecoderConfig& config, const MoeTargets& targets, const std::string& leaf);

// The adapter_config.json fields of a MoE model's adapter, as PEFT writes them: target_parameters
// (gate_up_proj, down_proj, gate.weight as adapted), rank_pattern and alpha_pattern doubling
// gate_up_proj's r and lora_alpha.
struct MoeAdapterFields {
    std::vector<std::string> target_parameters;
    std::vector<std::pair<std::string, int64_t>> rank_pattern;
    std::vector<std::pair<std::string, double>> alpha_pattern;
};
MoeAdapterFields moe_adapter_fields(const MoeTargets& targets, const LoraConfig& lora);

}  // namespace ftl::peft
