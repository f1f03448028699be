#include "model/decoder.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "model/attention.h"
#include "model/experts.h"
#include "model/neftune.h"
#include "model/recompute.h"
#include "model/router_balance.h"
#include "model/rms_norm.h"
#include "model/rope.h"
#include "model/swiglu.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::model {
namespace {

// The RMSNorm a forward runs: the Gemmas' or OLMo's own, else the fused kernel's entry or the
// composite (--fused_kernels False).
auto rms_norm_for(const DecoderConfig& config, const ForwardOptions& options) {
    if (config.unit_offset_norms) return unit_offset_rms_norm;
    if (config.weight_in_fp32_norms) return weight_in_fp32_rms_norm;
    return options.fused_kernels ? rms_norm : rms_norm_reference;
}

// The rotation tables of a forward's positions: one set per RopeConfig the layers use (the
// sliding layers' own in gemma3).
struct LayerRopes {
    RopeTables full, sliding;

    LayerRopes(const DecoderConfig& config, const at::Tensor& position_ids, at::ScalarType dtype)
        : full(rope_tables(config, config.rope, position_ids, dtype)) {
        if (config.sliding_rope) sliding = rope_tables(config, *config.sliding_rope, position_ids, dtype);
    }
    // Layer i's tables: undefined for a layer without rotation (smollm3's no_rope_layers).
    RopeTables of_layer(const DecoderConfig& config, size_t i) const {
        if (!config.layer_rope[i]) return {};
        return &config.rope_of_layer(i) == &config.rope ? full : sliding;
    }
};

// The layer's linears as DecoderLayerWeights::linears() lists them, for a const layer too.
template <class Layer>
auto linears_of(Layer& l) -> std::vector<std::pair<std::string, decltype(&l.o_proj)>> {
    std::vector<std::pair<std::string, decltype(&l.o_proj)>> out;
    if (l.fused_projections)  // Phi3Attention creates o_proj before qkv_proj
        out = {{"self_attn.o_proj", &l.o_proj}, {"self_attn.qkv_proj", &l.qkv_proj}};
    else
        out = {{"self_attn.q_proj", &l.q_proj}, {"self_attn.k_proj", &l.k_proj}, {"self_attn.v_proj", &l.v_proj},
               {"self_attn.o_proj", &l.o_proj}};
    if (l.moe) {
        if (l.router_first) out.push_back({l.router_path, &l.router});
        out.insert(out.end(), {{"mlp.experts.gate_up_proj", &l.experts_gate_up}, {"mlp.experts.down_proj", &l.experts_down}});
        if (!l.router_first) out.push_back({l.router_path, &l.router});
    }
    else if (l.fused_projections)
        out.insert(out.end(), {{"mlp.gate_up_proj", &l.gate_up_proj}, {"mlp.down_proj", &l.down_proj}});
    else
        out.insert(out.end(), {{"mlp.gate_proj", &l.gate_proj}, {"mlp.up_proj", &l.up_proj}, {"mlp.down_proj", &l.down_proj}});
    return out;
}

}  // namespace

std::vector<std::pair<std::string, Linear*>> DecoderLayerWeights::linears() { return linears_of(*this); }

std::vector<std::pair<std::string, at::Tensor*>> DecoderLayerWeights::norms() {
    std::vector<std::pair<std::string, at::Tensor*>> out;
    if (input_norm.defined()) out.push_back({"input_layernorm.weight", &input_norm});
    out.push_back({"post_attention_layernorm.weight", &post_attention_norm});
    if (pre_feedforward_norm.defined()) out.push_back({"pre_feedforward_layernorm.weight", &pre_feedforward_norm});
    if (post_feedforward_norm.defined()) out.push_back({"post_feedforward_layernorm.weight", &post_feedforward_norm});
    if (q_norm.defined()) out.push_back({"self_attn.q_norm.weight", &q_norm});
    if (k_norm.defined()) out.push_back({"self_attn.k_norm.weight", &k_norm});
    if (sinks.defined()) out.push_back({"self_attn.sinks", &sinks});
    return out;
}

std::vector<at::Tensor> DecoderLayerWeights::tensors() const {
    std::vector<at::Tensor> out{post_attention_norm};
    for (const at::Tensor* norm : {&input_norm, &pre_feedforward_norm, &post_feedforward_norm, &q_norm, &k_norm, &sinks})
        if (norm->defined()) out.push_back(*norm);
    for (const auto& [path, linear] : linears_of(*this)) {
        out.push_back(linear->weight);
        if (linear->bias.defined()) out.push_back(linear->bias);
        if (linear->adapter) {
            out.push_back(linear->adapter->A);
            out.push_back(linear->adapter->B);
            if (linear->adapter->magnitude.defined()) out.push_back(linear->adapter->magnitude);
        }
    }
    return out;
}

std::pair<int64_t, int64_t> linear_features(const Linear& linear) {
    const std::vector<int64_t>& shape = linear.four_bit ? linear.four_bit->shape : linear.weight.sizes().vec();
    if (shape.size() == 3) return {shape[1], shape[2]};  // a stack of experts
    return {shape.at(0), shape.at(1)};
}

namespace {

// Inverted dropout, as torch.nn.Dropout: keep with probability 1-p, scale by 1/(1-p).
at::Tensor dropped(const at::Tensor& input, double p, const std::optional<at::Generator>& generator) {
    at::Tensor keep = at::empty_like(input, at::kBool).bernoulli_(1.0 - p, generator);
    return input * keep / (1.0 - p);
}

// The weight DoRA normalises: dequantised when 4-bit (QDoRA) or 8-bit (PEFT's dequantize_bnb_weight:
// int8_vectorwise_dequant, fp32).
at::Tensor dora_base_weight(const Linear& linear) {
    if (linear.int8) return quant::dequantize_int8(linear.weight, linear.int8->scales);
    return linear.four_bit ? quant::dequantize_4bit(linear.weight, *linear.four_bit) : linear.weight;
}

// ||weight + scaling * lora_weight||_row, as PEFT's DoraLinearLayer.get_weight_norm: the sum in
// the promoted type, the norm returned in it.
at::Tensor row_norms(const at::Tensor& weight, const at::Tensor& lora_weight, double scaling) {
    const at::Tensor sum = weight + lora_weight * scaling;
    return at::linalg_vector_norm(sum, 2, at::IntArrayRef{1}).to(sum.scalar_type());
}

// DoRA's addition to the base output y (LowRankAdapter), PEFT's DoraLinearVariant.forward op for
// op so that autocast rounds where it does: x cast to the adapter's type, B A formed as
// lora_B(lora_A(I))^T, the norm without gradient. Plain autograd (unlike the LoRA branch, nothing
// is recomputed): it keeps x' and A x' for backward.
at::Tensor dora_output(const Linear& linear, const at::Tensor& x, const at::Tensor& y, const ForwardOptions& options) {
    const LowRankAdapter& a = *linear.adapter;
    at::Tensor input = x.to(a.A.scalar_type());
    const bool drops = options.training && a.dropout > 0.0;
    if (drops) input = dropped(input, a.dropout, options.generator);
    const at::Tensor weight = dora_base_weight(linear).to(input.scalar_type());
    at::Tensor norm;
    {
        at::NoGradGuard no_grad;
        const at::Tensor eye = at::eye(a.A.size(1), a.A.options());
        const at::Tensor lora_weight = at::linear(at::linear(eye, a.A), a.B).t().to(input.scalar_type());
        norm = row_norms(weight, lora_weight, a.scaling);
    }
    const at::Tensor scale = (a.magnitude / norm).view({1, -1});
    const at::Tensor lora_result = at::linear(at::linear(input, a.A), a.B);
    const at::Tensor base_result = drops                   ? at::linear(input, weight)
                                   : linear.bias.defined() ? y - linear.bias
                                                           : y;
    return (scale - 1) * base_result + scale * lora_result * a.scaling;
}

}  // namespace

at::Tensor dora_magnitude(const Linear& linear) {
    at::NoGradGuard no_grad;
    const LowRankAdapter& a = *linear.adapter;
    const at::Tensor weight = dora_base_weight(linear).to(a.A.device());
    return row_norms(weight, at::matmul(a.B, a.A), a.scaling).to(at::kFloat);
}

void reset_dora_magnitudes(DecoderLayerWeights& layer) {
    at::NoGradGuard no_grad;
    for (auto& [path, linear] : layer.linears())
        if (linear->adapter && linear->adapter->magnitude.defined())
            linear->adapter->magnitude.copy_(dora_magnitude(*linear));
}

at::Tensor apply_linear(const Linear& linear, const at::Tensor& x, const ForwardOptions& options) {
    if (linear.weight.dim() == 3) fail(ErrorKind::kInternal, "apply_linear: an experts' stack runs through experts_forward");
    // An 8-bit weight multiplies as bitsandbytes' Linear8bitLt does: dequantised while training on
    // a CPU, with int8 activations and outlier columns otherwise (quant::linear_int8).
    at::Tensor y = linear.four_bit         ? quant::linear_4bit(x, linear.weight, linear.four_bit, linear.bias)
                   : linear.int8           ? quant::linear_int8(x, linear.weight, linear.int8, linear.bias,
                                                                options.training && x.device().is_cpu())
                   : linear.bias.defined() ? at::linear(x, linear.weight, linear.bias)
                                           : at::linear(x, linear.weight);
    if (!linear.adapter) return y;
    if (linear.adapter->magnitude.defined()) return (y + dora_output(linear, x, y, options)).to(y.scalar_type());
    // PEFT's branch, lora_B(lora_A(dropout(x))) * scaling with x cast to the adapter's type, run
    // again from x in backward (model/recompute.h, with the dropout generator's state put back): it
    // keeps nothing but x, which the frozen linear keeps anyway, instead of a copy of the (dropped)
    // input and its mask per adapter; the products and gradients are the same.
    const LowRankAdapter a = *linear.adapter;
    const bool drops = options.training && a.dropout > 0.0;
    const std::optional<at::Generator> generator = drops ? options.generator : std::nullopt;
    auto branch = [a, drops, generator](const at::Tensor& x_in, bool /*recomputing*/) {
        // Under autocast to x's own type the cast to the adapter's type is skipped: autocast would
        // round the (dropped) input straight back, and the dropout's product and quotient, computed
        // in fp32 and rounded once either way, give the same values; half the bytes moved.
        const at::DeviceType device = x_in.device().type();
        const bool autocast_to_own_type = at::autocast::is_autocast_enabled(device) &&
                                          at::autocast::get_autocast_dtype(device) == x_in.scalar_type();
        at::Tensor input = autocast_to_own_type ? x_in : x_in.to(a.A.scalar_type());
        if (drops) input = dropped(input, a.dropout, generator);
        return at::linear(at::linear(input, a.A), a.B) * a.scaling;
    };
    const at::Tensor delta = options.recomputing ? branch(x, true) : recomputed_in_backward(branch, x, {a.A, a.B}, generator);
    return y + delta.to(y.scalar_type());
}

at::Tensor cap_logits(const at::Tensor& logits, std::optional<double> cap) {
    return cap ? at::tanh(logits / *cap) * *cap : logits;
}

std::vector<std::pair<std::string, at::Tensor>> named_weights(const DecoderConfig& config,
                                                             DecoderWeights& w) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    out.emplace_back("model.embed_tokens.weight", w.embed_tokens);
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        auto& l = w.layers[i];
        auto add = [&](const std::string& name, const at::Tensor& t) {
            if (t.defined()) out.emplace_back(p + name, t);
        };
        for (auto& [path, norm] : l.norms()) add(path, *norm);
        for (auto& [path, linear] : l.linears()) {
            // transformers 5 holds an experts' stack as a parameter of that name (no ".weight"),
            // its bias (gpt_oss) as <name>_bias.
            const bool stack = linear->weight.dim() == 3;
            add(stack ? path : path + ".weight", linear->weight);
            add(stack ? path + "_bias" : path + ".bias", linear->bias);
        }
    }
    out.emplace_back("model.norm.weight", w.final_norm);
    if (!config.tie_word_embeddings) out.emplace_back("lm_head.weight", w.lm_head);
    return out;
}

std::vector<std::pair<std::string, at::Tensor>> checkpoint_weights(const DecoderConfig& config,
                                                                  const std::vector<std::pair<std::string, at::Tensor>>& named) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    if (config.vision) {  // gemma3: the language model's tensors under the hub's language_model.model.*
        for (const auto& [name, t] : named)
            out.emplace_back(starts_with(name, "model.") ? "language_model." + name : name, t);
        return out;
    }
    if (!config.moe) return named;
    if (config.moe->stacks_in_out) {  // gpt_oss: the stacks as [E, in, out], under the same names
        for (const auto& [name, t] : named)
            out.emplace_back(name, ends_with(name, "_proj") && t.dim() == 3 ? t.transpose(1, 2).contiguous() : t);
        return out;
    }
    // The stacks' rows per expert under the hub's names: gate then up in gate_up_proj.
    const MoeConfig::CheckpointNames names = config.moe->checkpoint_names();
    const std::string block = "." + names.block + ".";
    for (const auto& [name, t] : named) {
        const size_t experts = name.find(".mlp.experts.");
        const size_t router = name.find(".mlp.gate.weight");
        if (experts == std::string::npos && router == std::string::npos) {
            out.emplace_back(name, t);
            continue;
        }
        const std::string layer = name.substr(0, std::min(experts, router));  // model.layers.<i>
        if (router != std::string::npos) {
            out.emplace_back(layer + block + "gate.weight", t);
            continue;
        }
        const bool gate_up = ends_with(name, ".gate_up_proj");
        const int64_t width = t.size(1) / 2;
        for (int64_t e = 0; e < t.size(0); ++e) {
            const std::string prefix = layer + block + "experts." + std::to_string(e) + ".";
            if (gate_up) {
                out.emplace_back(prefix + names.gate + ".weight", t[e].narrow(0, 0, width));
                out.emplace_back(prefix + names.up + ".weight", t[e].narrow(0, width, width));
            } else {
                out.emplace_back(prefix + names.down + ".weight", t[e]);
            }
        }
    }
    return out;
}

int64_t resize_token_embeddings(DecoderConfig& config, DecoderWeights& weights, int64_t new_size,
                                int64_t pad_to_multiple_of) {
    if (pad_to_multiple_of > 1) new_size = (new_size + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
    const int64_t old_size = weights.embed_tokens.size(0);
    if (new_size < old_size)
        fail(ErrorKind::kInternal, "resize_token_embeddings: cannot shrink " + std::to_string(old_size) + " rows to " +
                                       std::to_string(new_size));
    if (new_size == old_size) return new_size;
    auto grow = [&](const at::Tensor& old) {
        at::NoGradGuard no_grad;
        at::Tensor mean = old.to(at::kFloat).mean(0, /*keepdim=*/true).to(old.scalar_type());
        return at::cat({old, mean.expand({new_size - old_size, old.size(1)})}, 0).contiguous();
    };
    const bool tied = weights.lm_head.is_same(weights.embed_tokens);
    weights.embed_tokens = grow(weights.embed_tokens);
    weights.lm_head = tied ? weights.embed_tokens : grow(weights.lm_head);
    config.vocab_size = new_size;
    return new_size;
}

CausalLM::CausalLM(DecoderConfig config, DecoderWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
    const auto layers = static_cast<size_t>(config_.num_layers);
    if (weights_.layers.size() != layers || config_.layer_window.size() != layers || config_.layer_rope.size() != layers)
        fail(ErrorKind::kInternal, "CausalLM: the weights' layers, layer_window and layer_rope must match num_layers");
}

at::Tensor CausalLM::layer_forward(const DecoderLayerWeights& l, const at::Tensor& hidden, const RopeTables& rope,
                                   const AttentionPattern& attention, const ForwardOptions& options, KeyValueCache* cache,
                                   size_t layer_index) const {
    const int64_t rows = hidden.size(0), length = hidden.size(1), d = config_.head_dim;
    const auto norm = rms_norm_for(config_, options);
    const auto rotate = options.fused_kernels ? apply_rope : apply_rope_reference;
    // OLMo normalises only the blocks' outputs (no input norm).
    at::Tensor x = l.input_norm.defined() ? norm(hidden, l.input_norm, config_.rms_norm_eps) : hidden;
    // [B, T, n*d] -> [B, T, n, d], the layout attention takes.
    auto split_heads = [&](const at::Tensor& t) { return t.view({rows, length, -1, d}); };
    // Qwen3 and gemma3 normalise each head of q and k over head_dim before the rotation; OLMo the
    // whole projection before it is split into heads.
    auto head_norm = [&](const at::Tensor& t, const at::Tensor& weight) {
        if (!weight.defined()) return split_heads(t);
        if (config_.qk_norm_whole) return split_heads(norm(t, weight, config_.rms_norm_eps));
        return norm(split_heads(t), weight, config_.rms_norm_eps);
    };
    // Undefined tables: a layer without rotation (smollm3's no_rope_layers).
    auto rotated = [&](const at::Tensor& t) { return rope.cos.defined() ? rotate(t, rope) : t; };
    at::Tensor q, k, v;
    if (l.fused_projections) {  // phi3: one linear, split q | k | v
        const at::Tensor qkv = apply_linear(l.qkv_proj, x, options);
        const int64_t q_width = config_.num_heads * d, kv_width = config_.num_kv_heads * d;
        q = qkv.narrow(-1, 0, q_width);
        k = qkv.narrow(-1, q_width, kv_width);
        v = qkv.narrow(-1, q_width + kv_width, kv_width);
    } else {
        q = apply_linear(l.q_proj, x, options);
        k = apply_linear(l.k_proj, x, options);
        v = apply_linear(l.v_proj, x, options);
    }
    q = rotated(head_norm(q, l.q_norm));
    k = rotated(head_norm(k, l.k_norm));
    v = split_heads(v);
    if (cache) {  // the cache holds [B, n_kv, S, d]
        at::Tensor keys = k.transpose(1, 2), values = v.transpose(1, 2);
        if (cache->keys[layer_index].defined()) {
            keys = at::cat({cache->keys[layer_index], keys}, 2);
            values = at::cat({cache->values[layer_index], values}, 2);
        }
        cache->keys[layer_index] = keys;
        cache->values[layer_index] = values;
        k = keys.transpose(1, 2);
        v = values.transpose(1, 2);
    }
    const double scale = config_.attention_multiplier.value_or(1.0 / std::sqrt(static_cast<double>(d)));
    const at::Tensor attn = causal_attention(q, k, v, attention, scale, EagerScores{config_.attn_logit_softcapping, l.sinks});
    // granite scales each block's output before it joins the residual stream; gemma2, gemma3 and
    // OLMo normalise it (post_attention_norm, post_feedforward_norm).
    auto residual = [&](const at::Tensor& stream, const at::Tensor& block, const at::Tensor& output_norm) {
        if (output_norm.defined()) return stream + norm(block, output_norm, config_.rms_norm_eps);
        return config_.residual_multiplier == 1.0 ? stream + block : stream + block * config_.residual_multiplier;
    };
    const bool sandwich = config_.sandwich_norms, post_only = config_.post_norms;
    at::Tensor h = residual(hidden, apply_linear(l.o_proj, attn, options),
                            sandwich || post_only ? l.post_attention_norm : at::Tensor());

    const at::Tensor y = post_only ? h : norm(h, sandwich ? l.pre_feedforward_norm : l.post_attention_norm, config_.rms_norm_eps);
    return residual(h, mlp_forward(l, y, options), l.post_feedforward_norm);
}

at::Tensor CausalLM::mlp_forward(const DecoderLayerWeights& l, const at::Tensor& y, const ForwardOptions& options) const {
    const GatedActivationFn gated = config_.activation == GateActivation::kGeluTanh ? gelu_tanh_gated
                                    : options.fused_kernels                         ? swiglu
                                                                                    : swiglu_reference;
    if (l.moe) return experts_forward(l, *config_.moe, y, gated, options);
    // gate before up, as LlamaMLP runs them (the order LoRA dropout draws its masks in); phi3's
    // one linear holds gate then up.
    at::Tensor mlp;
    if (l.fused_projections) {
        const at::Tensor gate_up = apply_linear(l.gate_up_proj, y, options);
        const int64_t width = gate_up.size(-1) / 2;
        mlp = gated(gate_up.narrow(-1, 0, width), gate_up.narrow(-1, width, width));
    } else {
        at::Tensor gate = apply_linear(l.gate_proj, y, options);
        mlp = gated(gate, apply_linear(l.up_proj, y, options));
    }
    return apply_linear(l.down_proj, mlp, options);
}

std::string part_name(int part) {
    switch (part) {
        case WeightResidency::kEmbeddings: return "the embeddings";
        case WeightResidency::kHead: return "lm_head";
        case WeightResidency::kFinalNorm: return "the final norm";
        default: return "decoder layer " + std::to_string(part);
    }
}

at::Tensor CausalLM::hidden_states(const Batch& batch, const ForwardOptions& options) const {
    auto report = [&options](const std::string& where) {
        if (options.progress) options.progress(where);
    };
    if (options.router_balance) {  // the load-balancing loss counts the real tokens' rows only
        const bool masked = batch.attention_mask.defined() && has_padding(batch);
        const double real_rows = !masked        ? static_cast<double>(batch.input_ids.numel())
                                 : batch.padded ? static_cast<double>(batch.real_tokens)
                                                : batch.attention_mask.sum().item<double>();
        options.router_balance->start_batch(masked ? batch.attention_mask : at::Tensor(), real_rows);
    }
    at::Tensor hidden;
    {
        const AcquiredPart embeddings(options, WeightResidency::kEmbeddings);
        report("forward of the embeddings");
        hidden = embed(batch.input_ids, batch.host_input_ids, &options);
    }
    const LayerRopes ropes(config_, positions_of(batch), hidden.scalar_type());
    const at::DeviceType device_type = hidden.device().type();
    const at::ScalarType attention_type = at::autocast::is_autocast_enabled(device_type)
                                              ? at::autocast::get_autocast_dtype(device_type)
                                              : hidden.scalar_type();
    // Layers share a pattern unless their windows differ; build each distinct one once.
    std::optional<int64_t> pattern_window;
    AttentionPattern pattern;
    bool pattern_built = false;
    for (size_t i = 0; i < weights_.layers.size(); ++i) {
        const auto& window = config_.layer_window[i];
        if (!pattern_built || window != pattern_window) {
            // Capped scores (gemma2) and sinks (gpt_oss) take a mask (model/eager_attention.h): no
            // variable-length spans.
            pattern = attention_pattern(batch, window, hidden.device(), attention_type, config_.head_dim,
                                        options.fused_kernels && !config_.attn_logit_softcapping && !config_.attention_sinks);
            pattern_window = window;
            pattern_built = true;
        }
        const DecoderLayerWeights& layer = weights_.layers[i];
        const RopeTables layer_rope = ropes.of_layer(config_, i);
        const int part = static_cast<int>(i);
        const bool kept = static_cast<int64_t>(weights_.layers.size() - i) <= options.kept_layers ||
                          static_cast<int64_t>(i) % options.recompute_every != 0;
        if ((options.recompute_layers && !kept) || options.residency) {
            auto run_layer = [this, &layer, part, layer_rope, pattern, options](const at::Tensor& x, bool recomputing) {
                const char* pass = recomputing ? "backward" : "forward";
                const AcquiredPart weights(options, part, pass);
                if (options.progress) options.progress(std::string(pass) + " of " + part_name(part));
                ForwardOptions run_options = options;
                run_options.recomputing = recomputing;
                return layer_forward(layer, x, layer_rope, pattern, run_options);
            };
            std::vector<at::Tensor> weights = layer.tensors();
            if (options.residency)
                for (at::Tensor& source : options.residency->gradient_sources(part)) weights.push_back(source);
            hidden = recomputed_in_backward(run_layer, hidden, weights, options.generator);
        } else {
            report("forward of " + part_name(part));
            hidden = layer_forward(layer, hidden, layer_rope, pattern, options);
            // Backward reaches this layer when the gradient of its output arrives.
            if (options.progress && hidden.requires_grad()) {
                const ProgressReport progress = options.progress;
                hidden.register_hook([progress, part](const at::TensorBase&) { progress("backward of " + part_name(part)); });
            }
        }
    }
    const AcquiredPart final_norm(options, WeightResidency::kFinalNorm);
    report("forward of the final norm");
    return rms_norm_for(config_, options)(hidden, weights_.final_norm, config_.rms_norm_eps);
}

at::Tensor CausalLM::logits(const Batch& batch, const ForwardOptions& options) const {
    return head(hidden_states(batch, options), options);
}

at::Tensor CausalLM::embed(const at::Tensor& ids, const at::Tensor& host_ids, const ForwardOptions* training) const {
    const at::Tensor& table = weights_.embed_tokens;
    at::Tensor embedded;
    if (table.device() == ids.device()) {
        embedded = at::embedding(table, ids);
    } else {
        const at::Tensor on_host = (host_ids.defined() ? host_ids : ids.cpu()).reshape({-1});
        at::Tensor rows = at::empty({on_host.size(0), table.size(1)}, table.options().pinned_memory(ids.is_cuda()));
        at::index_select_out(rows, table, 0, on_host);
        embedded = rows.view({ids.size(0), ids.size(1), table.size(1)}).to(ids.device(), /*non_blocking=*/true);
    }
    // The Gemmas' scale belongs to their embedding module, so NEFTune's hook (on that module's
    // output) adds its noise after it; granite multiplies after the module, so after the noise.
    if (config_.embeddings_scaled)
        embedded = embedded * at::scalar_tensor(std::sqrt(static_cast<double>(config_.hidden_size)), embedded.options());
    if (training && training->training && training->neftune_noise_alpha > 0)
        embedded = with_neftune_noise(embedded, training->neftune_noise_alpha, training->generator);
    // granite's embedding_multiplier, in the table's type as transformers multiplies.
    return config_.embedding_multiplier == 1.0 ? embedded : embedded * config_.embedding_multiplier;
}

at::Tensor CausalLM::head(const at::Tensor& hidden, const ForwardOptions& options) const {
    const AcquiredPart head(options, WeightResidency::kHead);
    const at::Tensor logits = at::linear(hidden, weights_.lm_head);
    return cap_logits(config_.logits_scaling == 1.0 ? logits : logits / config_.logits_scaling,  // granite
                      config_.final_logit_softcapping);
}

void KeyValueCache::keep_rows(const at::Tensor& rows) {
    for (auto* list : {&keys, &values})
        for (at::Tensor& t : *list)
            if (t.defined()) t = t.index_select(0, rows.to(t.device()));
}

void KeyValueCache::truncate(int64_t tokens) {
    if (tokens >= length) return;
    for (auto* list : {&keys, &values})
        for (at::Tensor& t : *list)
            if (t.defined()) t = t.narrow(2, 0, tokens);
    length = tokens;
}

int64_t KeyValueCache::resume(int64_t tokens) {
    truncate(std::min(length, tokens - 1));
    return length;
}

at::Tensor CausalLM::decode_step(const at::Tensor& new_ids, const at::Tensor& attention_mask, const at::Tensor& position_ids,
                                 KeyValueCache& cache, const ForwardOptions& options) const {
    cache.keys.resize(weights_.layers.size());
    cache.values.resize(weights_.layers.size());
    const int64_t past = cache.length, t = new_ids.size(1), total = past + t;
    at::Tensor hidden;
    {
        const AcquiredPart embeddings(options, WeightResidency::kEmbeddings);
        hidden = embed(new_ids);
    }
    const LayerRopes ropes(config_, position_ids, hidden.scalar_type());
    // The first step sees the prompt as hidden_states() would; later ones, one query over every
    // key: not padding, and inside the layer's window.
    Batch prompt;
    prompt.input_ids = new_ids;
    prompt.attention_mask = attention_mask;
    prompt.position_ids = position_ids;
    auto mask_for = [&](const std::optional<int64_t>& window) {
        if (past == 0) return attention_mask_for(prompt, window);
        at::Tensor keys = attention_mask.narrow(1, 0, total).to(at::kBool).unsqueeze(1);  // [N, 1, S]
        const at::Tensor query = at::arange(t, new_ids.options()).unsqueeze(1) + past;  // [t, 1] absolute
        const at::Tensor key = at::arange(total, new_ids.options()).unsqueeze(0);      // [1, S]
        at::Tensor visible = key <= query;
        if (window) visible = visible & (query - key < *window);
        return (keys & visible.unsqueeze(0)).unsqueeze(1);  // [N, 1, t, S]
    };
    // Layers share a mask unless their windows differ; build each distinct one once.
    std::optional<int64_t> mask_window;
    AttentionPattern pattern;
    bool mask_built = false;
    for (size_t i = 0; i < weights_.layers.size(); ++i) {
        if (!mask_built || config_.layer_window[i] != mask_window) {
            pattern.mask = mask_for(config_.layer_window[i]);
            mask_window = config_.layer_window[i];
            mask_built = true;
        }
        const AcquiredPart part(options, static_cast<int>(i));
        hidden = layer_forward(weights_.layers[i], hidden, ropes.of_layer(config_, i), pattern, options, &cache, i);
    }
    cache.length = total;
    const AcquiredPart final_norm(options, WeightResidency::kFinalNorm);
    return rms_norm_for(config_, options)(hidden, weights_.final_norm, config_.rms_norm_eps);
}

}  // namespace ftl::model
