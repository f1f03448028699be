#include "peft/moe_lora.h"

#include <algorithm>
#include <sstream>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::peft {
namespace {

std::string number_text(double value) {
    std::ostringstream out;
    out << value;
    return out.str();
}

// gpt_oss's experts and router were parameters already in transformers 4: no module name maps to
// them, and PEFT adapts them only when target_parameters names them.
bool names_map_to_parameters(const model::DecoderConfig& config) { return !config.moe->stacks_in_out; }

}  // namespace

bool is_mapped_moe_name(const model::DecoderConfig& config, const std::string& leaf) {
    if (!names_map_to_parameters(config)) return false;
    const model::MoeConfig::CheckpointNames names = config.moe->checkpoint_names();
    return leaf == names.gate || leaf == names.up || leaf == names.down || leaf == "gate";
}

bool adapts_module(const model::DecoderConfig& config, const MoeTargets& targets, const std::string& leaf) {
    if (is_mapped_moe_name(config, leaf)) return false;
    return targets.all_linear ||
           std::find(targets.module_names.begin(), targets.module_names.end(), leaf) != targets.module_names.end();
}

MoeTargets resolve_moe_targets(const model::DecoderConfig& config, const LoraConfig& lora) {
    MoeTargets t;
    const std::string family = config.model_type;
    if (lora.targets_are_regex)
        fail(ErrorKind::kConfig, "--lora_target_modules: a regex on a " + family + " model (experts) is not read by this "
                                 "build; list the module names (q_proj, ..., " + config.moe->checkpoint_names().gate +
                                 ", ...) or all-linear");
    const model::MoeConfig::CheckpointNames names = config.moe->checkpoint_names();
    bool gate = false, up = false;
    const bool maps = names_map_to_parameters(config);
    if (!maps && !lora.target_parameters.empty())
        fail(ErrorKind::kConfig, "target_parameters (" + join(lora.target_parameters, ", ") + "): adapters on " + family +
                                     "'s experts and router are not read by this build; its attention's adapters are");
    if (to_lower(lora.target_modules) == "all-linear") {
        t.all_linear = true;
        t.gate_up = t.down = t.router = maps;
    } else {
        for (const std::string& raw : split(lora.target_modules, ',')) {
            const std::string name = trim(raw);
            if (name.empty()) continue;
            const bool llama_mlp = name == "gate_proj" || name == "up_proj" || name == "down_proj";
            if (!maps && (llama_mlp || name == "gate")) t.absent.push_back(name);
            else if (name == names.gate) gate = true;
            else if (name == names.up) up = true;
            else if (name == names.down) t.down = true;
            else if (name == "gate") t.router = true;
            else if (config.moe->mixtral_names && llama_mlp) t.absent.push_back(name);
            else t.module_names.push_back(name);
        }
        // PEFT's own parameter targets, as adapter_config.json lists them.
        for (const std::string& parameter : lora.target_parameters) {
            if (parameter == "gate_up_proj") gate = up = true;
            else if (parameter == "down_proj") t.down = true;
            else if (parameter == "gate.weight") t.router = true;
            else fail(ErrorKind::kConfig, "target_parameters: '" + parameter + "' is not a parameter of " + family +
                                              "'s experts or router (gate_up_proj, down_proj, gate.weight)");
        }
        if (gate != up)
            fail(ErrorKind::kConfig, "--lora_target_modules: '" + (gate ? names.gate : names.up) + "' without '" +
                                         (gate ? names.up : names.gate) + "': " + family + "'s experts hold both in one "
                                         "stacked parameter (gate_up_proj), which PEFT adapts whole; name both or neither");
        t.gate_up = gate;
    }
    const bool parameters = t.gate_up || t.down || t.router;
    if (parameters && lora.dropout > 0.0)
        fail(ErrorKind::kConfig, "--lora_dropout " + number_text(lora.dropout) + ": PEFT adapts " + family +
                                     "'s experts and router as parameters (its ParamWrapper), which take no dropout; set "
                                     "--lora_dropout 0, or leave " + names.gate + ", " + names.up + ", " + names.down +
                                     " and gate out of --lora_target_modules");
    if (parameters && lora.use_dora)
        fail(ErrorKind::kConfig, "--use_dora True: PEFT's DoRA does not apply to " + family + "'s experts and router "
                                 "(parameters, not linear modules); leave " + names.gate + ", " + names.up + ", " + names.down +
                                 " and gate out of --lora_target_modules");
    return t;
}

MoeAdapterFields moe_adapter_fields(const MoeTargets& targets, const LoraConfig& lora) {
    MoeAdapterFields f;
    if (targets.gate_up) {
        f.target_parameters.push_back("gate_up_proj");
        f.rank_pattern.emplace_back(".*\\.gate_up_proj", 2 * lora.r);
        f.alpha_pattern.emplace_back(".*\\.gate_up_proj", 2 * lora.alpha);
    }
    if (targets.down) f.target_parameters.push_back("down_proj");
    if (targets.router) f.target_parameters.push_back("gate.weight");
    return f;
}

}  // namespace ftl::peft
