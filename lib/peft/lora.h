// LoRA as PEFT does it (peft/tuners/lora): which linears get adapters, how they start, and the
// PEFT file format for saving and loading them.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/decoder.h"

namespace ftl::peft {

struct LoraConfig {
    int64_t r = 8;
    double alpha = 16;
    double dropout = 0.0;
    // "all-linear" (every linear except the output head), a comma-separated list of module names
    // (a module matches when its path equals the name or ends with "." + name), or, when
    // `targets_are_regex`, one regex that must match the whole module path (re.fullmatch).
    std::string target_modules = "all-linear";
    bool targets_are_regex = false;
    // PEFT's target_parameters (TRL's --lora_target_parameters): a MoE model's experts' stacks and
    // routers adapted as parameters (gate_up_proj, 7.mlp.experts.down_proj, gate.weight;
    // peft/moe_lora.h).
    std::vector<std::string> target_parameters;
    // PEFT's rank_pattern / alpha_pattern, in the file's order: a module or parameter path whose end
    // matches a pattern takes its r / lora_alpha (peft.utils.other.get_pattern_key: the first
    // pattern p with re.match(r"(.*\.)?(p)$", path)).
    std::vector<std::pair<std::string, int64_t>> rank_pattern;
    std::vector<std::pair<std::string, double>> alpha_pattern;
    bool use_rslora = false;  // scaling alpha / sqrt(r) instead of alpha / r
    // DoRA (Liu et al. 2024; PEFT's use_dora): each adapted linear also trains a magnitude per
    // output row, starting at the row norms of W (model/decoder.h, LowRankAdapter).
    bool use_dora = false;
    std::string base_model_name_or_path;
    std::string task_type = "CAUSAL_LM";  // PEFT's TaskType as adapter_config.json records it

    double scaling() const;
    // r and the scaling of the adapter at `path` (model.layers.0.self_attn.q_proj), the patterns applied.
    int64_t rank_for(const std::string& path) const;
    double scaling_for(const std::string& path) const;
    // Throws ftl::Error(kConfig) naming the flag (--lora_r, ...) for values PEFT rejects.
    void validate() const;
};

// Adds an adapter to every targeted linear, in PEFT's creation order, initialised as PEFT does
// with `generator` (torch's CPU generator semantics): per target, nn.Linear(in, r) and
// nn.Linear(r, out) draw their default kaiming-uniform weights, then A is redrawn with
// kaiming_uniform_(a=sqrt(5)) (bound 1/sqrt(in)) and B is zeroed. Adapters are fp32 (PEFT's
// autocast_adapter_dtype) on `device` (default: the base weights' device). DoRA's magnitudes start
// at the base weights' row norms, or with `magnitudes_later` are only allocated, for
// model::reset_dora_magnitudes to fill once the weights are quantised (QDoRA). Returns the adapted
// module paths; a target that matches nothing is ftl::Error(kConfig) listing the model's linear
// module names, except one fused into another of the model's linears (ignored_targets_warning).
// On a MoE model the experts and router are targeted as PEFT maps the names (peft/moe_lora.h).
std::vector<std::string> attach_lora(model::CausalLM& model, const LoraConfig& config, at::Generator& generator,
                                     std::optional<at::Device> device = std::nullopt, bool magnitudes_later = false);

// (module path, linear) of every linear LoRA may target, in the HF model's module order.
using LinearPaths = std::vector<std::pair<std::string, model::Linear*>>;
// The same for any model given its linears (Seq2SeqLM::linears()); `model_type` names it in errors.
std::vector<std::string> attach_lora(const LinearPaths& candidates, const std::string& model_type,
                                     const LoraConfig& config, at::Generator& generator,
                                     std::optional<at::Device> device = std::nullopt, bool magnitudes_later = false);

// A warning naming the listed targets that match none of the model's linears because the model
// fuses them into one (phi3: q_proj, k_proj, v_proj in qkv_proj; gate_proj, up_proj in
// gate_up_proj) or names them otherwise (mixtral's experts: w1, w3, w2), or nullopt. PEFT adapts the
// targets that do match and ignores these, so a list written for the Llama family (train.py's
// default) adapts phi3's o_proj and down_proj only, mixtral's attention only; attach_lora does the same.
std::optional<std::string> ignored_targets_warning(model::CausalLM& model, const LoraConfig& config);

// (PEFT state-dict name, tensor) of every adapter weight, e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight (the names adapter_model.safetensors uses).
std::vector<std::pair<std::string, at::Tensor>> adapter_parameters(model::CausalLM& model);
std::vector<std::pair<std::string, at::Tensor>> adapter_parameters(const LinearPaths& candidates);

// Writes adapter_config.json and adapter_model.safetensors into `dir` (created if missing),
// each atomically, as PeftModel.save_pretrained does. `full_tensors` (PEFT names) are saved with
// the LoRA weights: PEFT's save_embedding_layers="auto" adds the embeddings and lm_head when the
// vocabulary was resized (embedding_tensors gives them).
void save_adapter(const std::string& dir, model::CausalLM& model, const LoraConfig& config,
                  const std::vector<std::pair<std::string, at::Tensor>>& full_tensors = {});
// The same for any model given its linears (Seq2SeqLM::linears(), task_type SEQ_2_SEQ_LM).
void save_adapter(const std::string& dir, const LinearPaths& candidates, const LoraConfig& config,
                  const std::vector<std::pair<std::string, at::Tensor>>& full_tensors = {});

// The embeddings and lm_head under the names PEFT saves them with
// (base_model.model.model.embed_tokens.weight, base_model.model.lm_head.weight; a tied lm_head
// under both, as its state_dict lists it). The tensors must be defined (acquired under ZeRO-3).
std::vector<std::pair<std::string, at::Tensor>> embedding_tensors(model::CausalLM& model);

// Reads `dir`/adapter_config.json (peft_type LORA): r, lora_alpha, lora_dropout, use_rslora,
// target_modules (a list or a regex), base_model_name_or_path. Throws ftl::Error(kConfig) naming
// the file for anything else.
LoraConfig read_adapter_config(const std::string& dir);

// Reads a PEFT LoRA adapter folder, attaches its adapters and loads their weights (inference or
// continued training), and the embeddings / lm_head when the adapter carries them (the model is
// first resized to their rows, as the run that added tokens resized it). Throws naming the file
// for a non-LoRA adapter, missing tensors or shapes that do not fit the model.
LoraConfig load_adapter(const std::string& dir, model::CausalLM& model);
// The same for any model given its linears (Seq2SeqLM::linears()); `model_type` names it in errors.
LoraConfig load_adapter(const std::string& dir, const LinearPaths& candidates, const std::string& model_type);

}  // namespace ftl::peft
