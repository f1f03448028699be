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

void add_once(std::vector<std::string>& list, const std::string& entry) {
    if (std::find(list.begin(), list.end(), entry) == list.end()) list.push_back(entry);
}

// Every MoE layer's parameter keys, in the model's order.
std::vector<std::string> moe_parameter_keys(const model::DecoderConfig& config) {
    std::vector<std::string> keys;
    for (size_t i = 0; i < static_cast<size_t>(config.num_layers); ++i) {
        if (!config.is_moe_layer(i)) continue;
        keys.push_back(moe_parameter_key(config, i, "mlp.experts.gate_up_proj", true));
        keys.push_back(moe_parameter_key(config, i, "mlp.experts.down_proj", true));
        keys.push_back(moe_parameter_key(config, i, "mlp." + config.moe->router_name, false));
    }
    return keys;
}

bool matches_key(const std::string& key, const std::string& entry) { return key == entry || ends_with(key, "." + entry); }

}  // namespace

std::string moe_parameter_key(const model::DecoderConfig& config, size_t layer, const std::string& path, bool stacked) {
    return config.module_prefix() + "layers." + std::to_string(layer) + "." + path + (stacked ? "" : ".weight");
}

std::string experts_adapter_module(bool gate_up, bool down_adapted) {
    return gate_up && down_adapted ? "mlp.experts.base_layer" : "mlp.experts";
}

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

bool adapts_parameter(const MoeTargets& targets, const std::string& key) {
    return std::any_of(targets.parameters.begin(), targets.parameters.end(),
                       [&](const std::string& entry) { return matches_key(key, entry); });
}

MoeTargets resolve_moe_targets(const model::DecoderConfig& config, const LoraConfig& lora) {
    MoeTargets t;
    const std::string family = config.model_type;
    if (lora.targets_are_regex)
        fail(ErrorKind::kConfig, "--lora_target_modules: a regex on a " + family + " model (experts) is not read by this "
                                 "build; list the module names (q_proj, ..., " + config.moe->checkpoint_names().gate +
                                 ", ...) or all-linear");
    const model::MoeConfig::CheckpointNames names = config.moe->checkpoint_names();
    const bool maps = names_map_to_parameters(config);
    t.parameters = lora.target_parameters;
    bool gate = false, up = false, down = false, router = false;
    if (to_lower(lora.target_modules) == "all-linear") {
        t.all_linear = true;
        gate = up = down = router = maps;
    } else {
        for (const std::string& raw : split(lora.target_modules, ',')) {
            const std::string name = trim(raw);
            if (name.empty()) continue;
            const bool llama_mlp = name == "gate_proj" || name == "up_proj" || name == "down_proj";
            if (!maps && (llama_mlp || name == "gate")) t.absent.push_back(name);
            else if (name == names.gate) gate = true;
            else if (name == names.up) up = true;
            else if (name == names.down) down = true;
            else if (name == "gate") router = true;
            else if (config.moe->mixtral_names && llama_mlp) t.absent.push_back(name);
            else t.module_names.push_back(name);
        }
        if (gate != up)
            fail(ErrorKind::kConfig, "--lora_target_modules: '" + (gate ? names.gate : names.up) + "' without '" +
                                         (gate ? names.up : names.gate) + "': " + family + "'s experts hold both in one "
                                         "stacked parameter (gate_up_proj), which PEFT adapts whole; name both or neither");
    }
    if (gate && up) {
        add_once(t.parameters, "gate_up_proj");
        t.rank_pattern.emplace_back(".*\\.gate_up_proj", 2 * lora.r);
        t.alpha_pattern.emplace_back(".*\\.gate_up_proj", 2 * lora.alpha);
    }
    if (down) add_once(t.parameters, "down_proj");
    if (router) add_once(t.parameters, "gate.weight");

    const std::vector<std::string> keys = moe_parameter_keys(config);
    for (const std::string& entry : lora.target_parameters)
        if (std::none_of(keys.begin(), keys.end(), [&](const std::string& key) { return matches_key(key, entry); }))
            fail(ErrorKind::kConfig, "--lora_target_parameters: '" + entry + "' names no expert stack or router weight of "
                                     "this " + family + " model (a key matches when it equals the entry or ends with "
                                     "'.' + entry; its keys are like " +
                                     join(std::vector<std::string>(keys.begin(), keys.begin() + std::min<size_t>(3, keys.size())), ", ") +
                                     "; one layer's as '0.mlp.experts.down_proj')");
    const bool parameters = !t.parameters.empty();
    const std::string leave_out = maps ? "leave " + names.gate + ", " + names.up + ", " + names.down +
                                             " and gate out of --lora_target_modules"
                                       : "leave --lora_target_parameters empty";
    if (parameters && lora.dropout > 0.0)
        fail(ErrorKind::kConfig, "--lora_dropout " + number_text(lora.dropout) + ": PEFT adapts " + family +
                                     "'s experts and router as parameters (its ParamWrapper), which take no dropout; set "
                                     "--lora_dropout 0, or " + leave_out);
    if (parameters && lora.use_dora)
        fail(ErrorKind::kConfig, "--use_dora True: PEFT's DoRA does not apply to " + family + "'s experts and router "
                                 "(parameters, not linear modules); " + leave_out);
    return t;
}

LoraConfig with_moe_targets(const LoraConfig& lora, const MoeTargets& targets) {
    LoraConfig out = lora;
    out.target_parameters = targets.parameters;
    out.rank_pattern.insert(out.rank_pattern.end(), targets.rank_pattern.begin(), targets.rank_pattern.end());
    out.alpha_pattern.insert(out.alpha_pattern.end(), targets.alpha_pattern.begin(), targets.alpha_pattern.end());
    return out;
}

}  // namespace ftl::peft
