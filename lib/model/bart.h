// BART (Lewis et al. 2019) as transformers' BartForConditionalGeneration computes it, in ATen ops:
//
//   encoder: h = layernorm_embedding(shared(x) * embed_scale + positions[t + 2]);
//            per layer (post-norm): h = LN(h + self_attn(h)); h = LN(h + fc2(act(fc1(h))))
//   decoder: the same embedding (its own positions and layernorm_embedding); per layer:
//            h = LN(h + causal self_attn(h)); h = LN(h + cross_attn(h, encoder states));
//            h = LN(h + fc2(act(fc1(h))))
//   logits = h @ shared^T + final_logits_bias (lm_head tied to the shared embeddings)
// Attention: every projection has a bias; scores scaled by head_dim^-0.5; the encoder's padding
// keys are masked in its self-attention and in the decoder's cross-attention. Learned positions
// start at row 2 (BART's offset). In training (ForwardOptions::training) dropout applies where
// transformers' BART applies it, drawn from options.generator: `dropout` after the embeddings'
// norm, after each attention and after fc2; `attention_dropout` on the attention probabilities;
// `activation_dropout` after the activation of fc1. Layerdrop is not applied (refused when set).
// Shapes: B rows, S source tokens, T target tokens, H = d_model, V vocabulary.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/decoder.h"
#include "model/load.h"

namespace ftl::model {

struct BartConfig {
    int64_t vocab_size = 0;
    int64_t d_model = 0;
    int64_t encoder_layers = 0, decoder_layers = 0;
    int64_t encoder_attention_heads = 0, decoder_attention_heads = 0;
    int64_t encoder_ffn_dim = 0, decoder_ffn_dim = 0;
    int64_t max_position_embeddings = 0;
    std::string activation_function = "gelu";  // gelu (erf), gelu_new (tanh), relu
    bool scale_embedding = false;              // embeddings times sqrt(d_model)
    double dropout = 0.1, attention_dropout = 0.0, activation_dropout = 0.0;  // probabilities in training
    int64_t pad_token_id = 1;
    int64_t bos_token_id = 0;
    int64_t eos_token_id = 2;
    int64_t decoder_start_token_id = 2;
    std::optional<int64_t> forced_eos_token_id;
    std::string torch_dtype;
};

// config.json of a `bart` model; any other model_type, or a value outside its rule, is
// ftl::Error(kConfig) naming the file, the key and the value.
BartConfig read_bart_config(const std::string& model_dir);

struct LayerNorm {
    at::Tensor weight, bias;  // [H]
};

struct BartAttention {
    Linear q_proj, k_proj, v_proj, out_proj;  // [H, H] with biases
};

struct BartLayer {  // an encoder layer leaves cross_attn and its norm empty
    BartAttention self_attn;
    LayerNorm self_attn_layer_norm;
    std::optional<BartAttention> cross_attn;  // HF: encoder_attn
    LayerNorm cross_attn_layer_norm;          // HF: encoder_attn_layer_norm
    Linear fc1, fc2;                          // [F, H], [H, F]
    LayerNorm final_layer_norm;
};

struct BartStack {
    at::Tensor positions;  // [max_position_embeddings + 2, H]
    LayerNorm layernorm_embedding;
    std::vector<BartLayer> layers;
};

struct BartWeights {
    at::Tensor shared;             // [V, H]: both stacks' embeddings and the lm_head
    at::Tensor final_logits_bias;  // [1, V] (a buffer: never trained)
    BartStack encoder, decoder;
};

// The decoder's keys and values so far, for decoding one token at a time (transformers'
// EncoderDecoderCache): per decoder layer, the self-attention keys and values [N, heads, length,
// d] of the tokens decoded so far, and the cross-attention ones of the encoder states (computed at
// the first step).
struct DecoderCache {
    KeyValueCache self;  // its length: the tokens decoded so far
    std::vector<at::Tensor> cross_keys, cross_values;
    // Beam search: row i continues row rows[i] ([N] int64).
    void keep_rows(const at::Tensor& rows);
};

class Seq2SeqLM {
public:
    Seq2SeqLM(BartConfig config, BartWeights weights);

    const BartConfig& config() const { return config_; }
    BartWeights& weights() { return weights_; }
    // (HF name, tensor) for every trained weight: model.shared.weight, model.encoder.*, model.decoder.*.
    std::vector<std::pair<std::string, at::Tensor>> named_weights();
    // (HF module path, linear) of every linear in BartForConditionalGeneration's module order
    // (attention: k_proj, v_proj, q_proj, out_proj; the encoder's layers, then the decoder's with
    // self_attn, encoder_attn, fc1, fc2): the order PEFT creates adapters in.
    std::vector<std::pair<std::string, Linear*>> linears();

    // The frozen weights as ZeRO-3 partitions them, in forward order: WeightResidency::kEmbeddings
    // ("the embeddings": shared, both stacks' positions and layernorm_embedding, final_logits_bias),
    // encoder layer i as part i, decoder layer j as part encoder_layers + j. With
    // ForwardOptions::residency, encode/decode/logits acquire each part just before using it (the
    // embeddings in each of the three) and release it after; in training every layer is then
    // recomputed in backward (model/recompute.h), its part gathered again there, as the decoder
    // family does. ForwardOptions::recompute_layers does the same without ZeRO-3.
    std::vector<WeightPart> weight_parts();

    // Encoder states [B, S, H]; `attention_mask` [B, S] (1 = token, 0 = padding).
    at::Tensor encode(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                      const ForwardOptions& options = {}) const;
    // Decoder states [B, T, H] for `decoder_input_ids` [B, T] (causal; `decoder_attention_mask`
    // optional) attending to `encoder_states` with its mask.
    at::Tensor decode(const at::Tensor& decoder_input_ids, const at::Tensor& decoder_attention_mask,
                      const at::Tensor& encoder_states, const at::Tensor& encoder_mask,
                      const ForwardOptions& options = {}) const;
    // Decoder states [N, t, H] (eval mode) for `new_ids` [N, t] following the cache's tokens, whose
    // keys and values it appends; equal to decode() over the whole sequence at those positions.
    at::Tensor decode_step(const at::Tensor& new_ids, DecoderCache& cache, const at::Tensor& encoder_states,
                           const at::Tensor& encoder_mask, const ForwardOptions& options = {}) const;
    // Logits [B, T, V] from decoder states.
    at::Tensor logits(const at::Tensor& decoder_states, const ForwardOptions& options = {}) const;

private:
    at::Tensor embed(const BartStack& stack, const at::Tensor& ids, int64_t first_position = 0) const;
    at::Tensor attention(const BartAttention& a, const at::Tensor& x, const at::Tensor& memory, const at::Tensor& mask,
                         bool causal, int64_t heads, const ForwardOptions& options) const;
    // x [N, L, H] through `linear`, split into heads: [N, heads, L, d].
    at::Tensor heads_of(const Linear& linear, const at::Tensor& x, int64_t heads, const ForwardOptions& options) const;
    // softmax(q k^T / sqrt(d)) v over heads, then out_proj: [N, Lq, H].
    at::Tensor attend(const BartAttention& a, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      at::Tensor mask, bool causal, const ForwardOptions& options) const;
    at::Tensor feed_forward(const BartLayer& layer, const at::Tensor& x, const ForwardOptions& options) const;
    at::Tensor encoder_layer(const BartLayer& layer, const at::Tensor& x, const at::Tensor& mask,
                             const ForwardOptions& options) const;
    at::Tensor decoder_layer(const BartLayer& layer, const at::Tensor& x, const at::Tensor& self_mask,
                             const at::Tensor& encoder_states, const at::Tensor& cross_mask,
                             const ForwardOptions& options) const;

    BartConfig config_;
    BartWeights weights_;
};

// transformers' shift_tokens_right: [decoder_start, labels[:-1]] with -100 replaced by pad.
at::Tensor shift_tokens_right(const at::Tensor& labels, int64_t pad_token_id, int64_t decoder_start_token_id);

struct LoadedSeq2Seq {
    Seq2SeqLM model;
    std::vector<std::string> unused_tensors;
};

// A BART folder (config.json + safetensors) as BartForConditionalGeneration.from_pretrained
// builds it: the shared embeddings from model.shared.weight (or, in older files,
// model.encoder.embed_tokens.weight); final_logits_bias zero when absent, as transformers does.
LoadedSeq2Seq load_bart(const std::string& model_dir, const LoadOptions& options = {});

}  // namespace ftl::model
