#include "model/model_config.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "model/config_reader.h"

#include "util/files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::model {

using nlohmann::json;

namespace {

// One object of rope parameters ({rope_type|type, rope_theta, factor, ...}), `key` naming it in
// errors; keys it lacks fall back to the top level's (older files keep rope_theta there) and then
// to `default_theta`. A partial_rotary_factor other than 1 is refused unless `partial_allowed` (phi3).
//
// original_max_position_embeddings (llama3, longrope) as transformers' standardize_rope_params
// sets it: a top-level value (a config attribute) wins over the rope object's, which wins over
// max_position_embeddings; `original_default` is the config class's own attribute default (phi3:
// 4096), which likewise wins over the rope object's.
struct RopeRules {
    bool partial_allowed = false;
    std::optional<int64_t> original_default;
    // One of several per-layer-type objects: transformers reads yarn's `truncate` from the outer
    // rope_parameters only, so a per-type one is never seen (and it stays true).
    bool layer_typed = false;
};

// YaRN's default attention scale term (transformers' get_mscale).
double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

int64_t original_context(const ConfigReader& r, const ConfigReader& top, int64_t max_positions, const RopeRules& rules) {
    if (top.has("original_max_position_embeddings")) return top.integer("original_max_position_embeddings");
    if (rules.original_default) return *rules.original_default;
    return r.integer("original_max_position_embeddings", max_positions);
}

RopeConfig parse_rope_object(const json& params, const ConfigReader& top, const std::string& key, double default_theta,
                             int64_t max_positions, const std::string& source, const RopeRules& rules = {}) {
    if (!params.is_object()) top.bad(key, "must be an object");
    ConfigReader r(params, source + ": " + key);
    RopeConfig rope;
    rope.theta = r.number("rope_theta", top.number("rope_theta", default_theta));
    const std::string type = r.text("rope_type", r.text("type", "default"));
    rope.partial_rotary_factor = r.number("partial_rotary_factor", top.number("partial_rotary_factor", 1.0));
    if (rope.partial_rotary_factor != 1.0 && !rules.partial_allowed)
        r.bad("partial_rotary_factor", "only 1.0 is supported for this model type (phi3 takes others)");
    if (rope.partial_rotary_factor <= 0.0 || rope.partial_rotary_factor > 1.0)
        r.bad("partial_rotary_factor", "must be in (0, 1]");
    if (type == "default") {
        rope.type = RopeType::kDefault;
    } else if (type == "linear" || type == "dynamic") {
        rope.type = type == "linear" ? RopeType::kLinear : RopeType::kDynamic;
        rope.factor = r.number("factor", 0.0);
        if (rope.factor < 1.0) r.bad("factor", "must be a number >= 1 for rope_type " + type);
    } else if (type == "llama3") {
        rope.type = RopeType::kLlama3;
        rope.factor = r.number("factor", 0.0);
        if (rope.factor < 1.0) r.bad("factor", "must be a number >= 1 for rope_type llama3");
        rope.low_freq_factor = r.number("low_freq_factor", 0.0);
        rope.high_freq_factor = r.number("high_freq_factor", 0.0);
        if (rope.low_freq_factor <= 0) r.bad("low_freq_factor", "must be > 0 for rope_type llama3");
        if (rope.high_freq_factor <= rope.low_freq_factor)
            r.bad("high_freq_factor", "must be > low_freq_factor for rope_type llama3");
        rope.original_max_position_embeddings = original_context(r, top, max_positions, rules);
    } else if (type == "longrope" || type == "su") {  // "su": Phi-3's first name for it
        rope.type = RopeType::kLongrope;
        const int64_t original = original_context(r, top, max_positions, rules);
        rope.original_max_position_embeddings = original;
        rope.factor = r.number("factor", static_cast<double>(max_positions) / static_cast<double>(original));
        auto factors = [&](const char* name) {
            std::vector<double> out;
            const json& list = r.has(name) ? params.at(name) : json();
            if (!list.is_array() || list.empty()) r.bad(name, "must be a list of numbers for rope_type longrope");
            for (const json& v : list) {
                if (!v.is_number() || v.get<double>() <= 0) r.bad(name, "entries must be numbers > 0");
                out.push_back(v.get<double>());
            }
            return out;
        };
        rope.short_factor = factors("short_factor");
        rope.long_factor = factors("long_factor");
        rope.attention_factor =
            r.number("attention_factor", rope.factor <= 1.0 ? 1.0
                                                             : std::sqrt(1.0 + std::log(rope.factor) /
                                                                                   std::log(static_cast<double>(original))));
    } else if (type == "yarn") {
        rope.type = RopeType::kYarn;
        const int64_t original = original_context(r, top, max_positions, rules);
        rope.original_max_position_embeddings = original;
        if (!params.contains("factor")) r.bad("factor", "is required for rope_type yarn (null: max_position_embeddings / original)");
        rope.factor = r.number("factor", static_cast<double>(max_positions) / static_cast<double>(original));
        if (rope.factor < 1.0) r.bad("factor", "must be a number >= 1 for rope_type yarn");
        const double mscale = r.number("mscale", 0.0), mscale_all_dim = r.number("mscale_all_dim", 0.0);
        rope.attention_factor = r.number("attention_factor", mscale != 0.0 && mscale_all_dim != 0.0
                                                                 ? yarn_mscale(rope.factor, mscale) / yarn_mscale(rope.factor, mscale_all_dim)
                                                                 : yarn_mscale(rope.factor, 1.0));
        // transformers takes `or 32` / `or 1`: a 0 is the default too.
        const double beta_fast = r.number("beta_fast", 0.0), beta_slow = r.number("beta_slow", 0.0);
        rope.beta_fast = beta_fast != 0.0 ? beta_fast : 32.0;
        rope.beta_slow = beta_slow != 0.0 ? beta_slow : 1.0;
        rope.truncate = rules.layer_typed || r.boolean("truncate", true);
    } else {
        r.bad(params.contains("rope_type") ? "rope_type" : "type",
              "must be one of default, linear, dynamic, llama3, longrope, yarn (others are not supported for these models)");
    }
    return rope;
}

RopeConfig parse_rope(const json& config, const ConfigReader& top, int64_t max_positions, const std::string& source,
                      const RopeRules& rules = {}) {
    // transformers 5 writes `rope_parameters`; older files `rope_scaling` (+ top-level rope_theta).
    for (const char* key : {"rope_parameters", "rope_scaling"})
        if (top.has(key))
            return parse_rope_object(config.at(key), top, key, 10000.0, max_positions, source, rules);
    return parse_rope_object(json::object(), top, "rope_parameters", 10000.0, max_positions, source, rules);
}

// The two rotations of gemma3 and olmo3: {full_attention, sliding_attention} objects in
// rope_parameters (transformers 5), or the older rope_theta (full, default `full_theta`),
// `sliding_theta_key` (sliding, default `sliding_theta`) and rope_scaling (full only), as
// Gemma3TextConfig and Olmo3Config convert them.
std::pair<RopeConfig, RopeConfig> parse_layer_type_ropes(const json& config, const ConfigReader& top, int64_t max_positions,
                                                         const std::string& source, const std::string& model_type,
                                                         double full_theta, double sliding_theta,
                                                         const char* sliding_theta_key) {
    if (top.has("rope_parameters")) {
        const json& params = config.at("rope_parameters");
        if (!params.is_object() || params.contains("rope_type") || params.contains("rope_theta"))
            top.bad("rope_parameters",
                    "must hold one object per layer type (full_attention, sliding_attention) for " + model_type);
        const ConfigReader r(params, source + ": rope_parameters");
        auto layer_type = [&](const char* type, double default_theta) {
            RopeRules rules;
            rules.layer_typed = true;
            return parse_rope_object(r.has(type) ? params.at(type) : json::object(), r, type, default_theta, max_positions,
                                     source + ": rope_parameters", rules);
        };
        return {layer_type("full_attention", full_theta), layer_type("sliding_attention", sliding_theta)};
    }
    RopeConfig full = parse_rope_object(top.has("rope_scaling") ? config.at("rope_scaling") : json::object(), top,
                                        "rope_scaling", full_theta, max_positions, source);
    RopeConfig sliding;
    sliding.theta = top.number(sliding_theta_key, sliding_theta);
    return {full, sliding};
}

}  // namespace

const std::vector<std::string>& supported_model_types() {
    static const std::vector<std::string> types{"llama",   "mistral", "qwen2", "qwen3",      "granite",
                                                "smollm3", "gemma",   "gemma2", "gemma3_text", "phi3",
                                                "olmo2",   "olmo3",   "qwen3_moe", "mixtral", "gpt_oss"};
    return types;
}

int64_t VisionTower::parameters(int64_t text_hidden_size) const {
    const int64_t patches = (image_size / patch_size) * (image_size / patch_size);
    int64_t total = num_channels * patch_size * patch_size * hidden_size + hidden_size + patches * hidden_size;
    for (const LinearShape& l : layer_linears()) total += num_layers * (l.out * l.in + l.out);
    total += num_layers * 4 * hidden_size + 2 * hidden_size;  // two layer norms a layer, the post norm
    return total + hidden_size * text_hidden_size + hidden_size;
}

namespace {
DecoderConfig parse_checked(const std::string& json_text, const std::string& source);
}  // namespace

DecoderConfig parse_decoder_config(const std::string& json_text, const std::string& source) {
    try {
        return parse_checked(json_text, source);
    } catch (const json::exception& e) {
        fail(ErrorKind::kConfig, source + ": a value has the wrong JSON type (" + e.what() + ")");
    }
}

namespace {
// config[key]: a list of one entry per layer, else an error naming the key and `what` its entries are.
const json& per_layer_list(const json& config, const ConfigReader& r, const std::string& key, int64_t layers,
                           const std::string& what) {
    const json& list = config.at(key);
    if (!list.is_array() || static_cast<int64_t>(list.size()) != layers)
        r.bad(key, "must be a list with one " + what + " per layer (" + std::to_string(layers) + ")");
    return list;
}

// Marks the layers `layer_types` calls sliding_attention with `window` (full_attention: none).
void read_layer_types(const json& config, const ConfigReader& r, DecoderConfig& c, int64_t window) {
    const json& types = per_layer_list(config, r, "layer_types", c.num_layers, "attention type");
    for (int64_t i = 0; i < c.num_layers; ++i) {
        const json& t = types[static_cast<size_t>(i)];
        if (t == "sliding_attention") c.layer_window[static_cast<size_t>(i)] = window;
        else if (t != "full_attention") r.bad("layer_types", "entries must be full_attention or sliding_attention");
    }
}

// Windows of `window` tokens on the layers layer_types calls sliding_attention; without layer_types
// on every layer but each `full_every`-th (read from `full_every_key` when the family names one).
void mark_sliding_layers(const json& config, const ConfigReader& r, DecoderConfig& c, int64_t window, int64_t full_every,
                         const char* full_every_key = nullptr) {
    if (r.has("layer_types")) return read_layer_types(config, r, c, window);
    const int64_t every = full_every_key ? r.integer(full_every_key, full_every) : full_every;
    for (int64_t i = 0; i < c.num_layers; ++i)
        if ((i + 1) % every != 0) c.layer_window[static_cast<size_t>(i)] = window;
}

// llama, mistral, qwen2, qwen3, granite, smollm3 and the attention of qwen3_moe (qwen3's) and
// mixtral (mistral's): activation, biases, scalars, rotation, windows.
void read_llama_family(const json& config, const ConfigReader& r, DecoderConfig& c, const std::string& source) {
    const bool qwen2 = c.model_type == "qwen2", qwen3 = c.model_type == "qwen3" || c.model_type == "qwen3_moe";
    const bool mistral = c.model_type == "mistral", mixtral = c.model_type == "mixtral";
    const bool granite = c.model_type == "granite", smollm3 = c.model_type == "smollm3";
    const std::string act = r.text("hidden_act", "silu");
    if (act != "silu") r.bad("hidden_act", "must be silu for the Llama family");
    if (qwen2) {
        c.qkv_bias = true;
    } else if (qwen3) {
        c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
        c.qk_norm = true;
    } else if (!mistral && !mixtral) {
        c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
        c.mlp_bias = r.boolean("mlp_bias", false);
    }
    if (granite) {  // GraniteConfig's defaults: all 1.0
        c.embedding_multiplier = r.number("embedding_multiplier", 1.0);
        c.residual_multiplier = r.number("residual_multiplier", 1.0);
        c.logits_scaling = r.number("logits_scaling", 1.0);
        if (c.logits_scaling == 0.0) r.bad("logits_scaling", "must not be 0 (the logits are divided by it)");
        c.attention_multiplier = r.number("attention_multiplier", 1.0);
    }
    c.rope = parse_rope(config, r, c.max_position_embeddings, source);

    // Rotary embeddings: on every layer, except smollm3's no_rope_layers (1 = rotated, 0 = not;
    // absent: every no_rope_layer_interval-th layer is not).
    if (smollm3) {
        if (r.has("no_rope_layers")) {
            const json& flags = per_layer_list(config, r, "no_rope_layers", c.num_layers, "0 or 1");
            for (int64_t i = 0; i < c.num_layers; ++i) {
                const json& flag = flags[static_cast<size_t>(i)];
                if (flag != 0 && flag != 1) r.bad("no_rope_layers", "entries must be 0 (no rotation) or 1");
                c.layer_rope[static_cast<size_t>(i)] = flag == 1;
            }
        } else {
            const int64_t interval = r.integer("no_rope_layer_interval", 4);
            for (int64_t i = 0; i < c.num_layers; ++i) c.layer_rope[static_cast<size_t>(i)] = (i + 1) % interval != 0;
        }
    }

    // Sliding windows: mistral and mixtral on every layer; qwen2 and qwen3 when use_sliding_window,
    // on the layers that layer_types (or max_window_layers) name; qwen3_moe likewise, on every layer;
    // smollm3 likewise, on layer_types' or else its layers without rotation. llama has none.
    // MistralConfig defaults sliding_window to 4096 when the key is absent (MixtralConfig to none);
    // an explicit null is none.
    std::optional<int64_t> window;
    if (mistral && !config.contains("sliding_window")) window = 4096;
    const bool qwen = qwen2 || qwen3;
    if ((mistral || mixtral || ((qwen || smollm3) && r.boolean("use_sliding_window", false))) && r.has("sliding_window"))
        window = r.integer("sliding_window");
    if (window) {
        if (mixtral || c.model_type == "qwen3_moe") {
            c.layer_window.assign(static_cast<size_t>(c.num_layers), window);
        } else if (r.has("layer_types")) {
            read_layer_types(config, r, c, *window);
        } else if (smollm3) {
            for (int64_t i = 0; i < c.num_layers; ++i)
                if (!c.layer_rope[static_cast<size_t>(i)]) c.layer_window[static_cast<size_t>(i)] = window;
        } else {
            const int64_t first = qwen ? r.integer("max_window_layers", 28, 0) : 0;
            for (int64_t i = first; i < c.num_layers; ++i) c.layer_window[static_cast<size_t>(i)] = window;
        }
    }
}

// qwen3_moe and mixtral's experts (MoeConfig), with Qwen3MoeConfig's and MixtralConfig's defaults.
void read_moe(const json& config, const ConfigReader& r, DecoderConfig& c) {
    const bool mixtral = c.model_type == "mixtral", gpt_oss = c.model_type == "gpt_oss";
    MoeConfig moe;
    moe.mixtral_names = mixtral;
    moe.router_first = mixtral || gpt_oss;
    // All three configs map num_experts to num_local_experts (transformers 5 writes the latter;
    // Qwen's hub configs the former).
    moe.num_experts =
        r.integer(r.has("num_local_experts") ? "num_local_experts" : "num_experts", mixtral ? 8 : 128, 1);
    moe.experts_per_token = r.integer("num_experts_per_tok", mixtral ? 2 : gpt_oss ? 4 : 8, 1);
    if (moe.experts_per_token > moe.num_experts)
        r.bad("num_experts_per_tok", "must be at most the number of experts (" + std::to_string(moe.num_experts) + ")");
    moe.expert_intermediate_size =
        mixtral || gpt_oss ? c.intermediate_size : r.integer("moe_intermediate_size", 768, 1);
    moe.normalize_top_k = mixtral || (!gpt_oss && r.boolean("norm_topk_prob", false));
    moe.weights_in_logits_type = !mixtral;
    if (gpt_oss) {
        moe.router_name = "router";
        moe.softmax_after_top_k = moe.biases = moe.interleaved_gate_up = moe.stacks_in_out = true;
        moe.swiglu_alpha = r.number("swiglu_alpha", 1.702);
        moe.swiglu_limit = r.number("swiglu_limit", 7.0);
        if (*moe.swiglu_limit <= 0) r.bad("swiglu_limit", "must be > 0 (the clamp of the experts' gate and up)");
    }
    // The load-balancing loss's weight (model/router_balance.h). TRL's SFTTrainer adds the loss
    // whenever it is not 0, whatever output_router_logits says (it sets that itself).
    moe.router_aux_loss_coef = r.number("router_aux_loss_coef", 0.001);
    if (mixtral && r.number("router_jitter_noise", 0.0) != 0.0)
        r.bad("router_jitter_noise", "must be 0: ftlaunch does not jitter the router's input");
    c.layer_moe.assign(static_cast<size_t>(c.num_layers), true);
    if (!mixtral && !gpt_oss) {  // Qwen3MoeDecoderLayer: experts unless mlp_only_layers names it, every decoder_sparse_step-th
        const int64_t step = r.integer("decoder_sparse_step", 1, 1);
        for (int64_t i = 0; i < c.num_layers; ++i) c.layer_moe[static_cast<size_t>(i)] = (i + 1) % step == 0;
        if (r.has("mlp_only_layers")) {
            const json& dense = config.at("mlp_only_layers");
            if (!dense.is_array()) r.bad("mlp_only_layers", "must be a list of layer indices");
            for (const json& i : dense) {
                if (!i.is_number_integer() || i.get<int64_t>() < 0 || i.get<int64_t>() >= c.num_layers)
                    r.bad("mlp_only_layers", "entries must be layer indices below num_hidden_layers (" +
                                                 std::to_string(c.num_layers) + ")");
                c.layer_moe[i.get<size_t>()] = false;
            }
        }
    }
    c.moe = moe;
}

// gemma, gemma2, gemma3_text, with GemmaConfig's, Gemma2Config's and Gemma3TextConfig's defaults.
void read_gemma(const json& config, const ConfigReader& r, DecoderConfig& c, const std::string& source) {
    const bool gemma1 = c.model_type == "gemma", gemma3 = c.model_type == "gemma3_text";
    // GemmaConfig reads hidden_act and takes the released configs' legacy "gelu" for the tanh
    // approximation it was meant as; gemma2 and gemma3 read hidden_activation.
    const char* act_key = gemma1 ? "hidden_act" : "hidden_activation";
    const std::string act = r.text(act_key, "gelu_pytorch_tanh");
    if (act != "gelu_pytorch_tanh" && !(gemma1 && act == "gelu"))
        r.bad(act_key, "must be gelu_pytorch_tanh" + std::string(gemma1 ? " (or gelu, which GemmaConfig reads as it)" : "") +
                           " for " + c.model_type);
    c.activation = GateActivation::kGeluTanh;
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    c.unit_offset_norms = c.embeddings_scaled = true;
    if (r.boolean("use_bidirectional_attention", false))
        r.bad("use_bidirectional_attention", "must be false: ftlaunch trains causal language models");
    if (gemma1) {
        c.rope = parse_rope(config, r, c.max_position_embeddings, source);
        return;
    }
    c.sandwich_norms = true;
    const double scalar = r.number("query_pre_attn_scalar", 256.0);
    if (scalar <= 0) r.bad("query_pre_attn_scalar", "must be > 0 (scores are scaled by its inverse square root)");
    c.attention_multiplier = std::pow(scalar, -0.5);  // Python's scalar**-0.5
    // A cap absent takes the family's default, null none. Gemma2Config caps scores at 50 and
    // logits at 30; gemma3 caps neither by default, and its attention never reads
    // attn_logit_softcapping (Gemma3Attention does not pass it on), so neither does ours.
    auto cap = [&](const char* key, std::optional<double> fallback) -> std::optional<double> {
        if (!config.contains(key)) return fallback;
        if (!r.has(key)) return std::nullopt;
        const double value = r.number(key, 0.0);
        if (value <= 0) r.bad(key, "must be > 0, or null for no capping");
        return value;
    };
    c.final_logit_softcapping = cap("final_logit_softcapping", gemma3 ? std::nullopt : std::optional<double>(30.0));
    if (!gemma3) c.attn_logit_softcapping = cap("attn_logit_softcapping", 50.0);
    if (gemma3) {
        c.qk_norm = true;  // per head, as qwen3's (with the Gemma norm)
        auto [full, sliding] =
            parse_layer_type_ropes(config, r, c.max_position_embeddings, source, c.model_type, 1e6, 1e4, "rope_local_base_freq");
        c.rope = full;
        c.sliding_rope = sliding;
    } else {
        c.rope = parse_rope(config, r, c.max_position_embeddings, source);
    }
    // Windows: sliding_window (4096 when absent) on the layers layer_types calls sliding_attention;
    // without layer_types, all but every 2nd (gemma2) or every sliding_window_pattern-th (gemma3,
    // 6) layer. gemma2 takes null for no window; gemma3's sliding layers also rotate differently,
    // so it needs one.
    std::optional<int64_t> window = 4096;
    if (config.contains("sliding_window")) {
        if (r.has("sliding_window") || gemma3) window = r.integer("sliding_window");
        else window.reset();
    }
    if (window) mark_sliding_layers(config, r, c, *window, gemma3 ? 6 : 2, gemma3 ? "sliding_window_pattern" : nullptr);
}

// phi3 (Phi-3, Phi-3.5, Phi-4), with Phi3Config's defaults: the Llama decoder with fused q/k/v and
// gate/up linears, a partial rotation, default or longrope rotary embeddings, one window on every
// layer when sliding_window is set, and no biases.
void read_phi3(const json& config, const ConfigReader& r, DecoderConfig& c, const std::string& source) {
    const std::string act = r.text("hidden_act", "silu");
    if (act != "silu") r.bad("hidden_act", "must be silu for phi3");
    // Training dropout in the residual stream and on the embeddings is not implemented; every
    // released Phi-3 and Phi-4 config sets them to 0.
    for (const char* key : {"resid_pdrop", "embd_pdrop"})
        if (r.number(key, 0.0) != 0.0) r.bad(key, "must be 0: ftlaunch applies no dropout to the residual stream");
    c.fused_projections = true;
    // Phi3Config takes a partial rotation and defaults original_max_position_embeddings to 4096.
    c.rope = parse_rope(config, r, c.max_position_embeddings, source, RopeRules{true, 4096});
    if (c.rope.type != RopeType::kDefault && c.rope.type != RopeType::kLongrope)
        r.bad(r.has("rope_parameters") ? "rope_parameters" : "rope_scaling", "rope_type must be default or longrope for phi3");
    if (r.has("sliding_window"))
        c.layer_window.assign(static_cast<size_t>(c.num_layers), r.integer("sliding_window"));
}

// olmo2, olmo3 (OLMo 2, OLMo 3), with Olmo2Config's and Olmo3Config's defaults: the Llama decoder
// with post_norms, whole-projection q/k norms and Olmo2RMSNorm's rounding; biases with
// attention_bias. olmo3 adds windows (sliding_window, default 4096) on the layers layer_types
// calls sliding_attention (without it three of every four), which rotate with their own rope.
void read_olmo(const json& config, const ConfigReader& r, DecoderConfig& c, const std::string& source) {
    const std::string act = r.text("hidden_act", "silu");
    if (act != "silu") r.bad("hidden_act", "must be silu for " + c.model_type);
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    c.post_norms = c.qk_norm = c.qk_norm_whole = c.weight_in_fp32_norms = true;
    if (c.model_type == "olmo2") {
        c.rope = parse_rope(config, r, c.max_position_embeddings, source);
        return;
    }
    auto [full, sliding] =
        parse_layer_type_ropes(config, r, c.max_position_embeddings, source, c.model_type, 1e4, 1e4, "rope_theta");
    c.rope = full;
    c.sliding_rope = sliding;
    // Olmo3's sliding layers rotate with their own rope whether or not they have a window, so a
    // window is needed to tell them apart here.
    if (config.contains("sliding_window") && !r.has("sliding_window"))
        r.bad("sliding_window", "must be a number for olmo3: its sliding_attention layers rotate with their own rope");
    mark_sliding_layers(config, r, c, r.integer("sliding_window", 4096, 1), 4);
}

// gpt_oss (gpt-oss-20b, -120b), with GptOssConfig's defaults: attention with biases and sinks, on
// alternate layers (layer_types; without it the even ones) a window of sliding_window (128) tokens,
// YaRN rotation (factor 32 over 4096 positions, theta 150000, no truncation) when the config names
// none, Olmo2RMSNorm's rounding (GptOssRMSNorm), and experts in every layer (read_moe).
void read_gpt_oss(const json& config, const ConfigReader& r, DecoderConfig& c, const std::string& source) {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", true);
    c.attention_sinks = c.weight_in_fp32_norms = true;
    const char* key = r.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
    const json yarn = {{"rope_type", "yarn"}, {"factor", 32.0},    {"beta_fast", 32.0},
                       {"beta_slow", 1.0},    {"truncate", false}, {"original_max_position_embeddings", 4096}};
    c.rope = parse_rope_object(r.has(key) ? config.at(key) : yarn, r, key, 150000.0, c.max_position_embeddings, source);
    if (config.contains("sliding_window") && !r.has("sliding_window")) return;  // null: no windows
    mark_sliding_layers(config, r, c, r.integer("sliding_window", 128, 1), 2);
}

// gemma3 (Gemma3ForConditionalGeneration): its text_config read as a gemma3_text (the top level's
// tie_word_embeddings, dtype and quantization_config apply to it, and its token ids where the text
// config has none), with its vision_config's shape (VisionTower).
DecoderConfig read_gemma3_multimodal(const json& config, const ConfigReader& r, const std::string& source) {
    for (const char* key : {"text_config", "vision_config"})
        if (!r.has(key) || !config.at(key).is_object())
            r.bad(key, "must be an object (Gemma3Config's language model and SigLIP vision tower)");
    json text = config.at("text_config");
    text["model_type"] = "gemma3_text";
    text["tie_word_embeddings"] = r.boolean("tie_word_embeddings", true);
    for (const char* key : {"dtype", "torch_dtype", "quantization_config"})
        if (config.contains(key)) text[key] = config.at(key);
    for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
        if (!text.contains(key) && config.contains(key)) text[key] = config.at(key);
    DecoderConfig c = parse_checked(text.dump(), source + ": text_config");
    const ConfigReader v(config.at("vision_config"), source + ": vision_config");
    if (v.boolean("vision_use_head", true))
        v.bad("vision_use_head", "must be false, as Gemma 3's vision towers set it (a pooling head is not carried)");
    VisionTower tower;
    tower.hidden_size = v.integer("hidden_size", 768, 1);
    tower.intermediate_size = v.integer("intermediate_size", 3072, 1);
    tower.num_layers = v.integer("num_hidden_layers", 12, 1);
    tower.image_size = v.integer("image_size", 224, 1);
    tower.patch_size = v.integer("patch_size", 16, 1);
    tower.num_channels = v.integer("num_channels", 3, 1);
    c.vision = tower;
    return c;
}

DecoderConfig parse_checked(const std::string& json_text, const std::string& source) {
    json config = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object())
        fail(ErrorKind::kConfig, source + ": not a JSON object (malformed config.json)");
    ConfigReader r(config, source);
    DecoderConfig c;
    c.model_type = r.text("model_type", "");
    if (c.model_type == "gemma3") return read_gemma3_multimodal(config, r, source);
    const auto& types = supported_model_types();
    if (std::find(types.begin(), types.end(), c.model_type) == types.end())
        r.bad("model_type", "must be one of " + join(types, ", ") + ", or gemma3 (Gemma 3's image-and-text "
                                                                    "checkpoints, trained on text) in this build");
    const bool qwen2 = c.model_type == "qwen2", qwen3 = c.model_type == "qwen3", mistral = c.model_type == "mistral";
    const bool smollm3 = c.model_type == "smollm3", gemma = starts_with(c.model_type, "gemma");
    const bool phi3 = c.model_type == "phi3", olmo = starts_with(c.model_type, "olmo");
    const bool gpt_oss = c.model_type == "gpt_oss", mixtral = c.model_type == "mixtral";
    const bool moe = mixtral || gpt_oss || c.model_type == "qwen3_moe";

    c.vocab_size = r.integer("vocab_size");
    c.hidden_size = r.integer("hidden_size");
    c.intermediate_size = r.integer("intermediate_size");
    c.num_layers = r.integer("num_hidden_layers");
    c.num_heads = r.integer("num_attention_heads");
    c.num_kv_heads = r.integer("num_key_value_heads", c.num_heads);
    if (c.num_heads % c.num_kv_heads != 0)
        r.bad("num_key_value_heads", "must divide num_attention_heads (" + std::to_string(c.num_heads) + ")");
    if (r.has("head_dim") || qwen3 || gemma || gpt_oss) {
        c.head_dim = r.integer("head_dim", qwen3 ? 128 : gpt_oss ? 64 : 256);  // Qwen3Config's, GptOssConfig's, Gemma*Config's
    } else {
        if (c.hidden_size % c.num_heads != 0)
            r.bad("hidden_size", "must be divisible by num_attention_heads when head_dim is not given");
        c.head_dim = c.hidden_size / c.num_heads;
    }
    if (c.head_dim % 2 != 0) r.bad("head_dim", "must be even for rotary embeddings");
    c.rms_norm_eps = r.number("rms_norm_eps", phi3 || olmo || mixtral || gpt_oss ? 1e-5 : 1e-6);
    c.max_position_embeddings =
        r.integer("max_position_embeddings", qwen2 || qwen3 || smollm3 || c.model_type == "qwen3_moe" ? 32768
                                             : mistral || mixtral || gpt_oss || c.model_type == "gemma3_text" ? 131072
                                             : gemma                                    ? 8192
                                             : phi3                                     ? 4096
                                                                                        : 2048);
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", smollm3 || gemma);  // SmolLM3Config and Gemma*Config tie
    c.layer_rope.assign(static_cast<size_t>(c.num_layers), true);
    c.layer_window.assign(static_cast<size_t>(c.num_layers), std::nullopt);
    if (gemma) read_gemma(config, r, c, source);
    else if (phi3) read_phi3(config, r, c, source);
    else if (olmo) read_olmo(config, r, c, source);
    else if (gpt_oss) read_gpt_oss(config, r, c, source);
    else read_llama_family(config, r, c, source);
    if (moe) read_moe(config, r, c);
    // Rotated in halves: an even number of dims (gemma3's sliding rotation is never partial).
    const int64_t rotated = c.rotary_dim();
    if (rotated % 2 != 0 || rotated == 0)
        r.bad("head_dim", "times partial_rotary_factor must be an even number of rotated dims (got " +
                              std::to_string(rotated) + ")");
    for (const RopeConfig* rope : {&c.rope, c.sliding_rope ? &*c.sliding_rope : nullptr})
        if (rope && rope->type == RopeType::kLongrope &&
            (static_cast<int64_t>(rope->short_factor.size()) != rotated / 2 ||
             static_cast<int64_t>(rope->long_factor.size()) != rotated / 2))
            r.bad(r.has("rope_parameters") ? "rope_parameters" : "rope_scaling",
                  "short_factor and long_factor must hold one number per rotated frequency (" +
                      std::to_string(rotated / 2) + ")");
    c.torch_dtype = r.text("dtype", r.text("torch_dtype", ""));
    if (r.has("quantization_config")) {
        const json& q = config.at("quantization_config");
        if (!q.is_object()) r.bad("quantization_config", "must be an object");
        const ConfigReader qr(q, source + ": quantization_config");
        const std::string method = qr.text("quant_method", "");
        const bool four_bit = qr.boolean("load_in_4bit", false), eight_bit = qr.boolean("load_in_8bit", false);
        const bool mxfp4 = gpt_oss && method == "mxfp4";  // the hub's gpt-oss: MXFP4 experts, dequantised on load
        if (!mxfp4 && (method != "bitsandbytes" || four_bit == eight_bit))
            r.bad("quantization_config", "only bitsandbytes 4-bit or 8-bit checkpoints (quant_method bitsandbytes, "
                                         "load_in_4bit or load_in_8bit true), and gpt_oss's mxfp4 experts, are read; start "
                                         "from the floating-point model");
        c.mxfp4_checkpoint = mxfp4;
        if (four_bit) {
            c.bnb_4bit_compute_dtype = qr.text("bnb_4bit_compute_dtype", "float32");
            c.bnb_4bit_nested = qr.boolean("bnb_4bit_use_double_quant", false);
        } else if (eight_bit) {
            c.llm_int8_threshold = qr.number("llm_int8_threshold", 6.0);
            if (qr.boolean("llm_int8_has_fp16_weight", false))
                r.bad("quantization_config.llm_int8_has_fp16_weight", "must be false: ftlaunch keeps 8-bit base weights frozen");
        }
    }
    c.bos_token_id = r.token_id("bos_token_id");
    c.eos_token_id = r.token_id("eos_token_id");
    c.pad_token_id = r.token_id("pad_token_id");
    return c;
}
}  // namespace

DecoderConfig read_decoder_config(const std::string& model_dir) {
    const std::string path = model_dir + "/config.json";
    const auto text = read_text_file(path);
    if (!text) fail(ErrorKind::kConfig, path + ": cannot read (is " + model_dir + " a model folder?)");
    return parse_decoder_config(*text, path);
}

}  // namespace ftl::model
