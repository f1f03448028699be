#include "model/bart.h"

#include <cmath>
#include <limits>

#include "model/recompute.h"
#include "util/error.h"

namespace ftl::model {
namespace {

constexpr int64_t kPositionOffset = 2;  // BartLearnedPositionalEmbedding's offset
constexpr double kLayerNormEps = 1e-5;  // nn.LayerNorm's default, which BART keeps

at::Tensor layer_norm(const at::Tensor& x, const LayerNorm& norm) {
    return at::layer_norm(x, {x.size(-1)}, norm.weight, norm.bias, kLayerNormEps);
}

// [B, L] (1 = token) -> [B, 1, 1, L] bool (true = may attend), or undefined when nothing is padding.
at::Tensor key_padding_mask(const at::Tensor& mask) {
    if (!mask.defined() || mask.all().item<bool>()) return {};
    return mask.to(at::kBool).unsqueeze(1).unsqueeze(1);
}

// torch.nn.functional.dropout in training (inverted: kept values scaled by 1/(1-p)); identity otherwise.
at::Tensor dropped(const at::Tensor& x, double p, const ForwardOptions& options) {
    if (!options.training || p == 0.0) return x;
    return x * (at::empty_like(x).bernoulli_(1.0 - p, options.generator) / (1.0 - p));
}

// Every tensor a layer reads that may need a gradient (its adapters; the frozen weights are
// filtered out by recomputed_in_backward, and are undefined between ZeRO-3 gathers).
std::vector<at::Tensor> layer_tensors(const BartLayer& l) {
    std::vector<at::Tensor> out;
    auto add = [&out](const Linear& linear) {
        out.push_back(linear.weight);
        out.push_back(linear.bias);
        if (linear.adapter) {
            out.push_back(linear.adapter->A);
            out.push_back(linear.adapter->B);
        }
    };
    for (const BartAttention* a : {&l.self_attn, l.cross_attn ? &*l.cross_attn : nullptr})
        if (a)
            for (const Linear* linear : {&a->q_proj, &a->k_proj, &a->v_proj, &a->out_proj}) add(*linear);
    add(l.fc1);
    add(l.fc2);
    for (const LayerNorm* n : {&l.self_attn_layer_norm, &l.cross_attn_layer_norm, &l.final_layer_norm}) {
        out.push_back(n->weight);
        out.push_back(n->bias);
    }
    return out;
}

// Runs one layer as part `part` (acquired around it); recomputed in backward when the pass
// recomputes layers or gathers weights (ZeRO-3). `reads`: what the layer reads that may need a
// gradient, besides its input.
at::Tensor run_layer(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& input, int part,
                     const std::string& name, std::vector<at::Tensor> reads, const ForwardOptions& options) {
    const RecomputedLayer run = [layer, part, name, options](const at::Tensor& x, bool recomputing) {
        const AcquiredPart acquired(options, part, name, recomputing ? "backward" : "forward");
        return layer(x);
    };
    if (!options.training || !(options.recompute_layers || options.residency)) return run(input, false);
    return recomputed_in_backward(run, input, reads, options.generator);
}

}  // namespace

Seq2SeqLM::Seq2SeqLM(BartConfig config, BartWeights weights) : config_(std::move(config)), weights_(std::move(weights)) {
    if (static_cast<int64_t>(weights_.encoder.layers.size()) != config_.encoder_layers ||
        static_cast<int64_t>(weights_.decoder.layers.size()) != config_.decoder_layers)
        fail(ErrorKind::kInternal, "Seq2SeqLM: layer counts differ from the config");
}

std::vector<std::pair<std::string, at::Tensor>> Seq2SeqLM::named_weights() {
    std::vector<std::pair<std::string, at::Tensor>> out{{"model.shared.weight", weights_.shared}};
    auto linear = [&](const std::string& name, Linear& l) {
        out.emplace_back(name + ".weight", l.weight);
        out.emplace_back(name + ".bias", l.bias);
    };
    auto norm = [&](const std::string& name, LayerNorm& n) {
        out.emplace_back(name + ".weight", n.weight);
        out.emplace_back(name + ".bias", n.bias);
    };
    auto attention = [&](const std::string& name, BartAttention& a) {
        linear(name + ".q_proj", a.q_proj);
        linear(name + ".k_proj", a.k_proj);
        linear(name + ".v_proj", a.v_proj);
        linear(name + ".out_proj", a.out_proj);
    };
    for (auto [prefix, stack] : {std::pair<std::string, BartStack*>{"model.encoder", &weights_.encoder},
                                 std::pair<std::string, BartStack*>{"model.decoder", &weights_.decoder}}) {
        out.emplace_back(prefix + ".embed_positions.weight", stack->positions);
        norm(prefix + ".layernorm_embedding", stack->layernorm_embedding);
        for (size_t i = 0; i < stack->layers.size(); ++i) {
            BartLayer& l = stack->layers[i];
            const std::string p = prefix + ".layers." + std::to_string(i) + ".";
            attention(p + "self_attn", l.self_attn);
            norm(p + "self_attn_layer_norm", l.self_attn_layer_norm);
            if (l.cross_attn) {
                attention(p + "encoder_attn", *l.cross_attn);
                norm(p + "encoder_attn_layer_norm", l.cross_attn_layer_norm);
            }
            linear(p + "fc1", l.fc1);
            linear(p + "fc2", l.fc2);
            norm(p + "final_layer_norm", l.final_layer_norm);
        }
    }
    return out;
}

std::vector<WeightPart> Seq2SeqLM::weight_parts() {
    auto add_linear = [](WeightPart& part, Linear& l) {
        part.slots.push_back({&l.weight});
        part.slots.push_back({&l.bias});
    };
    auto add_norm = [](WeightPart& part, LayerNorm& n) {
        part.slots.push_back({&n.weight});
        part.slots.push_back({&n.bias});
    };
    WeightPart embeddings{WeightResidency::kEmbeddings, "the embeddings", {{&weights_.shared}, {&weights_.final_logits_bias}}};
    for (BartStack* stack : {&weights_.encoder, &weights_.decoder}) {
        embeddings.slots.push_back({&stack->positions});
        add_norm(embeddings, stack->layernorm_embedding);
    }
    std::vector<WeightPart> parts{embeddings};
    int id = 0;
    for (auto [kind, stack] : {std::pair<std::string, BartStack*>{"encoder", &weights_.encoder},
                               std::pair<std::string, BartStack*>{"decoder", &weights_.decoder}})
        for (size_t i = 0; i < stack->layers.size(); ++i) {
            BartLayer& l = stack->layers[i];
            WeightPart part{id++, kind + " layer " + std::to_string(i), {}};
            for (BartAttention* a : {&l.self_attn, l.cross_attn ? &*l.cross_attn : nullptr}) {
                if (!a) continue;
                for (Linear* linear : {&a->q_proj, &a->k_proj, &a->v_proj, &a->out_proj}) add_linear(part, *linear);
            }
            add_norm(part, l.self_attn_layer_norm);
            if (l.cross_attn) add_norm(part, l.cross_attn_layer_norm);
            add_linear(part, l.fc1);
            add_linear(part, l.fc2);
            add_norm(part, l.final_layer_norm);
            parts.push_back(std::move(part));
        }
    return parts;
}

std::vector<std::pair<std::string, Linear*>> Seq2SeqLM::linears() {
    std::vector<std::pair<std::string, Linear*>> out;
    auto attention = [&](const std::string& name, BartAttention& a) {
        out.emplace_back(name + ".k_proj", &a.k_proj);
        out.emplace_back(name + ".v_proj", &a.v_proj);
        out.emplace_back(name + ".q_proj", &a.q_proj);
        out.emplace_back(name + ".out_proj", &a.out_proj);
    };
    for (auto [prefix, stack] : {std::pair<std::string, BartStack*>{"model.encoder", &weights_.encoder},
                                 std::pair<std::string, BartStack*>{"model.decoder", &weights_.decoder}}) {
        for (size_t i = 0; i < stack->layers.size(); ++i) {
            BartLayer& l = stack->layers[i];
            const std::string p = prefix + ".layers." + std::to_string(i) + ".";
            attention(p + "self_attn", l.self_attn);
            if (l.cross_attn) attention(p + "encoder_attn", *l.cross_attn);
            out.emplace_back(p + "fc1", &l.fc1);
            out.emplace_back(p + "fc2", &l.fc2);
        }
    }
    return out;
}

at::Tensor Seq2SeqLM::embed(const BartStack& stack, const at::Tensor& ids, int64_t first_position) const {
    const double scale = config_.scale_embedding ? std::sqrt(static_cast<double>(config_.d_model)) : 1.0;
    at::Tensor tokens = at::embedding(weights_.shared, ids) * scale;
    const at::Tensor positions = at::arange(ids.size(1), ids.options()) + (first_position + kPositionOffset);
    return layer_norm(tokens + at::embedding(stack.positions, positions), stack.layernorm_embedding);
}

at::Tensor Seq2SeqLM::heads_of(const Linear& linear, const at::Tensor& x, int64_t heads,
                               const ForwardOptions& options) const {
    return apply_linear(linear, x, options).view({x.size(0), x.size(1), heads, config_.d_model / heads}).transpose(1, 2);
}

at::Tensor Seq2SeqLM::attention(const BartAttention& a, const at::Tensor& x, const at::Tensor& memory,
                                const at::Tensor& mask, bool causal, int64_t heads, const ForwardOptions& options) const {
    // q, k, v made in this order, as transformers makes them (the order autograd sums their
    // gradients into x in).
    const at::Tensor q = heads_of(a.q_proj, x, heads, options);
    const at::Tensor k = heads_of(a.k_proj, memory, heads, options);
    const at::Tensor v = heads_of(a.v_proj, memory, heads, options);
    return attend(a, q, k, v, mask, causal, options);
}

at::Tensor Seq2SeqLM::attend(const BartAttention& a, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             at::Tensor mask, bool causal, const ForwardOptions& options) const {
    const int64_t rows = q.size(0), length = q.size(2), d = q.size(3);
    if (causal && (mask.defined() || (options.training && config_.attention_dropout > 0.0))) {
        const at::Tensor lower = at::ones({length, length}, q.options().dtype(at::kBool)).tril();
        mask = mask.defined() ? mask & lower : lower;  // padding and causality together
        causal = false;
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    at::Tensor out;
    if (options.training && config_.attention_dropout > 0.0) {
        // softmax(q k^T * scale, masked) with dropout on the probabilities, drawn from our generator.
        at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
        if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
        out = at::matmul(dropped(at::softmax(scores, -1), config_.attention_dropout, options), v);
    } else {
        out = at::scaled_dot_product_attention(q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt,
                                               /*dropout_p=*/0.0, causal, scale);
    }
    return apply_linear(a.out_proj, out.transpose(1, 2).reshape({rows, length, config_.d_model}), options);
}

at::Tensor Seq2SeqLM::feed_forward(const BartLayer& layer, const at::Tensor& x, const ForwardOptions& options) const {
    at::Tensor h = apply_linear(layer.fc1, x, options);
    if (config_.activation_function == "gelu") h = at::gelu(h);
    else if (config_.activation_function == "gelu_new") h = at::gelu(h, "tanh");
    else h = at::relu(h);
    return dropped(apply_linear(layer.fc2, dropped(h, config_.activation_dropout, options), options), config_.dropout, options);
}

at::Tensor Seq2SeqLM::encode(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                             const ForwardOptions& options) const {
    at::Tensor h;
    {
        const AcquiredPart embeddings(options, WeightResidency::kEmbeddings);
        h = dropped(embed(weights_.encoder, input_ids), config_.dropout, options);
    }
    const at::Tensor mask = key_padding_mask(attention_mask);
    for (size_t i = 0; i < weights_.encoder.layers.size(); ++i) {
        const BartLayer& l = weights_.encoder.layers[i];
        h = run_layer([this, &l, mask, options](const at::Tensor& x) { return encoder_layer(l, x, mask, options); }, h,
                      static_cast<int>(i), "encoder layer " + std::to_string(i), layer_tensors(l), options);
    }
    return h;
}

at::Tensor Seq2SeqLM::encoder_layer(const BartLayer& l, const at::Tensor& x, const at::Tensor& mask,
                                    const ForwardOptions& options) const {
    at::Tensor h = layer_norm(x + dropped(attention(l.self_attn, x, x, mask, false, config_.encoder_attention_heads, options),
                                          config_.dropout, options),
                              l.self_attn_layer_norm);
    return layer_norm(h + feed_forward(l, h, options), l.final_layer_norm);
}

at::Tensor Seq2SeqLM::decode(const at::Tensor& decoder_input_ids, const at::Tensor& decoder_attention_mask,
                             const at::Tensor& encoder_states, const at::Tensor& encoder_mask,
                             const ForwardOptions& options) const {
    at::Tensor h;
    {
        const AcquiredPart embeddings(options, WeightResidency::kEmbeddings);
        h = dropped(embed(weights_.decoder, decoder_input_ids), config_.dropout, options);
    }
    const at::Tensor self_mask = key_padding_mask(decoder_attention_mask);
    const at::Tensor cross_mask = key_padding_mask(encoder_mask);
    const int first_part = static_cast<int>(weights_.encoder.layers.size());
    for (size_t i = 0; i < weights_.decoder.layers.size(); ++i) {
        const BartLayer& l = weights_.decoder.layers[i];
        std::vector<at::Tensor> reads = layer_tensors(l);
        reads.push_back(encoder_states);  // cross-attention: its gradient flows back to the encoder
        h = run_layer(
            [this, &l, self_mask, encoder_states, cross_mask, options](const at::Tensor& x) {
                return decoder_layer(l, x, self_mask, encoder_states, cross_mask, options);
            },
            h, first_part + static_cast<int>(i), "decoder layer " + std::to_string(i), std::move(reads), options);
    }
    return h;
}

at::Tensor Seq2SeqLM::decoder_layer(const BartLayer& l, const at::Tensor& x, const at::Tensor& self_mask,
                                    const at::Tensor& encoder_states, const at::Tensor& cross_mask,
                                    const ForwardOptions& options) const {
    at::Tensor h = layer_norm(x + dropped(attention(l.self_attn, x, x, self_mask, true, config_.decoder_attention_heads, options),
                                          config_.dropout, options),
                              l.self_attn_layer_norm);
    h = layer_norm(h + dropped(attention(*l.cross_attn, h, encoder_states, cross_mask, false, config_.decoder_attention_heads,
                                         options),
                               config_.dropout, options),
                   l.cross_attn_layer_norm);
    return layer_norm(h + feed_forward(l, h, options), l.final_layer_norm);
}

void DecoderCache::keep_rows(const at::Tensor& rows) {
    self.keep_rows(rows);
    for (auto* list : {&cross_keys, &cross_values})
        for (at::Tensor& t : *list)
            if (t.defined()) t = t.index_select(0, rows.to(t.device()));
}

at::Tensor Seq2SeqLM::decode_step(const at::Tensor& new_ids, DecoderCache& cache, const at::Tensor& encoder_states,
                                  const at::Tensor& encoder_mask, const ForwardOptions& options) const {
    const size_t layers = weights_.decoder.layers.size();
    for (auto* list : {&cache.self.keys, &cache.self.values, &cache.cross_keys, &cache.cross_values}) list->resize(layers);
    const int64_t past = cache.self.length, t = new_ids.size(1), heads = config_.decoder_attention_heads;
    at::Tensor h;
    {
        const AcquiredPart embeddings(options, WeightResidency::kEmbeddings);
        h = embed(weights_.decoder, new_ids, past);
    }
    // New token i (position past + i) sees every cached token and the new ones up to itself.
    at::Tensor self_mask;
    if (t > 1)
        self_mask = at::arange(past + t, new_ids.options()).unsqueeze(0) <= (at::arange(t, new_ids.options()) + past).unsqueeze(1);
    const at::Tensor cross_mask = key_padding_mask(encoder_mask);
    const int first_part = static_cast<int>(weights_.encoder.layers.size());
    for (size_t i = 0; i < layers; ++i) {
        const AcquiredPart part(options, first_part + static_cast<int>(i), "decoder layer " + std::to_string(i));
        const BartLayer& l = weights_.decoder.layers[i];
        at::Tensor k = heads_of(l.self_attn.k_proj, h, heads, options), v = heads_of(l.self_attn.v_proj, h, heads, options);
        if (cache.self.keys[i].defined()) {
            k = at::cat({cache.self.keys[i], k}, 2);
            v = at::cat({cache.self.values[i], v}, 2);
        }
        cache.self.keys[i] = k;
        cache.self.values[i] = v;
        h = layer_norm(h + attend(l.self_attn, heads_of(l.self_attn.q_proj, h, heads, options), k, v, self_mask, false, options),
                       l.self_attn_layer_norm);
        if (!cache.cross_keys[i].defined()) {
            cache.cross_keys[i] = heads_of(l.cross_attn->k_proj, encoder_states, heads, options);
            cache.cross_values[i] = heads_of(l.cross_attn->v_proj, encoder_states, heads, options);
        }
        h = layer_norm(h + attend(*l.cross_attn, heads_of(l.cross_attn->q_proj, h, heads, options), cache.cross_keys[i],
                                  cache.cross_values[i], cross_mask, false, options),
                       l.cross_attn_layer_norm);
        h = layer_norm(h + feed_forward(l, h, options), l.final_layer_norm);
    }
    cache.self.length = past + t;
    return h;
}

at::Tensor Seq2SeqLM::logits(const at::Tensor& decoder_states, const ForwardOptions& options) const {
    const AcquiredPart embeddings(options, WeightResidency::kEmbeddings, "lm_head (the shared embeddings)");
    return at::linear(decoder_states, weights_.shared) + weights_.final_logits_bias.to(decoder_states.scalar_type());
}

at::Tensor shift_tokens_right(const at::Tensor& labels, int64_t pad_token_id, int64_t decoder_start_token_id) {
    at::Tensor shifted = at::full_like(labels, decoder_start_token_id);
    shifted.narrow(1, 1, labels.size(1) - 1).copy_(labels.narrow(1, 0, labels.size(1) - 1));
    return shifted.masked_fill_(shifted == -100, pad_token_id);
}

}  // namespace ftl::model
