// The Llama-family causal LM (llama, mistral, qwen2, qwen3, granite, smollm3, phi3, OLMo 2/3, and
// with experts qwen3_moe and mixtral) and the Gemmas (gemma, gemma2, gemma3_text) written with ATen
// ops, so autograd gives the gradients and the same code runs on CPU and GPU. A MoE layer's MLP is
// model/experts.h's.
//
// Per layer (HF LlamaDecoderLayer; qwen3 and gemma3 apply q_norm/k_norm per head inside rope(...),
// smollm3's no_rope_layers leave rope out, granite scales as DecoderConfig says):
//   x = h + o_proj(attention(rope(q_proj(rms(h))), rope(k_proj(rms(h))), v_proj(rms(h))))
//   h' = x + down_proj(act(gate_proj(rms(x))) * up_proj(rms(x)))      act: silu, Gemma's gelu_tanh
// then a final RMSNorm and lm_head (tied to embed_tokens when tie_word_embeddings). gemma2 and
// gemma3 (Gemma2DecoderLayer) normalise each block's output before it joins the stream:
//   x = h + rms_post_attention(o_proj(attention(...)))
//   h' = x + rms_post_feedforward(down_proj(act(gate_proj(rms_pre_feedforward(x))) * up_proj(...)))
// Shapes: B rows, T tokens, H = hidden_size, heads n_h and n_kv (GQA), head_dim d, vocab V.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/attention.h"
#include "model/batch.h"
#include "model/model_config.h"
#include "model/rope.h"
#include "quant/four_bit.h"
#include "quant/int8.h"

namespace ftl::model {

// A low-rank adapter on a linear layer (LoRA, Hu et al. 2021, as PEFT computes it):
//   y = base(x) + scaling * B(A(dropout(x))),  A [r, in], B [out, r], x cast to A's dtype.
//
// DoRA (PEFT's use_dora) adds a magnitude m [out] and rescales each output row by
// s = m / ||W + scaling * B A||_row, the norm held constant in backward (the DoRA paper, 4.3):
//   y = base(x) + (s - 1) * (base(x') - bias) + s * scaling * B(A(x')),  x' = dropout(x)
// with base(x') computed anew when dropout is on (PEFT's DoraLinearLayer); W dequantised when 4-bit.
struct LowRankAdapter {
    at::Tensor A;
    at::Tensor B;
    double scaling = 1.0;
    double dropout = 0.0;
    at::Tensor magnitude;  // DoRA's m [out] (fp32, trained); undefined for plain LoRA
};

// A linear layer: weight [out, in] as in HF, bias undefined when the family has none, and an
// optional adapter. A stack of experts' linears (DecoderLayerWeights::moe) has weight [E, out, in],
// no bias, and an adapter laid out as PEFT's ParamWrapper lays it out: A [E*r, in] read as
// [E, r, in], B [out, r*E] read as [out, r, E] (expert e's B_e = B[:, :, e]), so that expert e
// computes x W_e^T + scaling * (x A_e^T) B_e^T, never with dropout; it is applied by the MoE block,
// not by apply_linear. With `four_bit` (QLoRA) the weight holds the packed 4-bit codes in
// bitsandbytes' layout and four_bit its quantisation state (quant/four_bit.h); with `int8`
// (LLM.int8, --use_8bit_quantization) the int8 codes [out, in] and int8 their row scales
// (quant/int8.h). Either is frozen.
struct Linear {
    at::Tensor weight;
    at::Tensor bias;
    std::optional<LowRankAdapter> adapter;
    std::shared_ptr<const quant::FourBitState> four_bit;
    std::shared_ptr<const quant::Int8State> int8;
};

// (out_features, in_features) of a linear, 4-bit or not (of each expert for a stack).
std::pair<int64_t, int64_t> linear_features(const Linear& linear);

// Weights of one decoder layer.
struct DecoderLayerWeights {
    at::Tensor input_norm;                  // [H]; undefined with DecoderConfig::post_norms (OLMo)
    Linear q_proj, k_proj, v_proj, o_proj;  // [n_h*d, H], [n_kv*d, H] x2, [H, n_h*d]
    // phi3 (DecoderConfig::fused_projections): q, k, v from qkv_proj [n_h*d + 2*n_kv*d, H] and gate,
    // up from gate_up_proj [2I, H]; q_proj, k_proj, v_proj, gate_proj and up_proj stay empty.
    bool fused_projections = false;
    Linear qkv_proj, gate_up_proj;
    // [d] each (DecoderConfig::qk_norm), [n_h*d] and [n_kv*d] with qk_norm_whole, else undefined.
    at::Tensor q_norm, k_norm;
    at::Tensor sinks;  // [n_h] with DecoderConfig::attention_sinks (gpt_oss), else undefined
    at::Tensor post_attention_norm;         // [H]
    // [H] each with DecoderConfig::sandwich_norms (gemma2, gemma3); post_feedforward_norm also
    // with post_norms (OLMo); else undefined.
    at::Tensor pre_feedforward_norm, post_feedforward_norm;
    Linear gate_proj, up_proj, down_proj;   // [I, H], [I, H], [H, I]
    // A mixture-of-experts MLP (DecoderConfig::is_moe_layer) instead of gate/up/down: the router
    // mlp.gate [E, H] and the experts' stacks mlp.experts.gate_up_proj [E, 2I, H] (gate rows
    // first) and mlp.experts.down_proj [E, H, I].
    // The router is mlp.<MoeConfig::router_name>, listed first with MoeConfig::router_first; with
    // MoeConfig::biases it and the stacks have biases ([E], [E, 2I], [E, H]).
    bool moe = false;
    bool router_first = false;
    std::string router_path = "mlp.gate";
    Linear router, experts_gate_up, experts_down;
    // Loaded with LoadOptions::stack_experts_late: the hub's per-expert tensors, mapped (gate_up:
    // each expert's gate rows, then its up rows; down: each expert's), the stacks meanwhile meta
    // tensors, until model::stack_experts.
    std::vector<at::Tensor> gate_up_pieces, down_pieces;

    // (module path inside the layer, linear) in HF's module order: self_attn.q_proj, k, v, o,
    // mlp.gate_proj, up, down (phi3: self_attn.o_proj, qkv_proj, mlp.gate_up_proj, down_proj;
    // a MoE layer: the attention's, then mlp.experts.gate_up_proj, mlp.experts.down_proj and
    // the router, the router first with router_first: the order PEFT adapts them as parameters).
    // PEFT creates adapters in this order.
    std::vector<std::pair<std::string, Linear*>> linears();
    // (weight's path inside the layer, weight) of the layer's vectors: input_layernorm,
    // post_attention_layernorm, then pre_ and post_feedforward_layernorm, self_attn.q_norm and
    // k_norm, and gpt_oss's self_attn.sinks where the family has them (undefined ones are left out).
    std::vector<std::pair<std::string, at::Tensor*>> norms();
    // Every tensor the layer reads: norms, weights, biases, adapter matrices.
    std::vector<at::Tensor> tensors() const;
};

// Where weights live between uses. ZeRO-3 keeps only each rank's slice and makes a part whole
// just before it runs: acquire(part) fills that part's tensors in the model's DecoderWeights until
// release(part). Parts: kEmbeddings (embed_tokens), 0..L-1 (a decoder layer), kFinalNorm
// (final_norm), kHead (lm_head; the embeddings when tied). Tensors a forward saves for backward
// stay alive through the graph after release.
class WeightResidency {
public:
    static constexpr int kEmbeddings = -1;
    static constexpr int kHead = -2;
    static constexpr int kFinalNorm = -3;
    virtual ~WeightResidency() = default;
    virtual void acquire(int part) = 0;
    virtual void release(int part) = 0;
    // Whether acquire(part) communicates with other ranks (what a hang there would wait on).
    virtual bool gathers(int part) const = 0;
    // The leaf tensors a part's weight gradients flow into when they are not the model's own
    // tensors (ZeRO-3 full fine-tuning: the rank's slices, through the gather): a layer recomputed
    // in backward lists them as its weights.
    virtual std::vector<at::Tensor> gradient_sources(int) const { return {}; }
};

// One part of a model's weights as ZeRO-3 partitions it (zero::PartitionedWeights): its
// WeightResidency id, its name in messages, and the model's tensor fields it holds, in the order
// the model uses the parts in a forward pass. `dtype`: the type the slot's slices are kept in
// when not the partition's (packed 4-bit codes keep their storage type; 16-bit frozen linears).
struct WeightPart {
    struct Slot {
        Slot(at::Tensor* slot_tensor, std::optional<at::ScalarType> slot_dtype = std::nullopt)  // NOLINT: a pointer converts
            : tensor(slot_tensor), dtype(slot_dtype) {}
        at::Tensor* tensor;
        std::optional<at::ScalarType> dtype;
    };
    int id;
    std::string name;
    std::vector<Slot> slots;
};

// Where a pass is, for the launcher's watchdog (util/heartbeat.h): called with a description
// ("forward of decoder layer 3", "backward of decoder layer 3: gathering its weights (ZeRO-3)")
// as each part of the model starts, in forward and, for the layers, in backward.
using ProgressReport = std::function<void(const std::string& where)>;

// A part as WeightResidency numbers them, in words: "decoder layer 3" (HF's 0-based index, as in
// model.layers.3), "the embeddings", "lm_head", "the final norm".
std::string part_name(int part);

// How a forward pass runs: in training, adapters apply their dropout with `generator`;
// `recompute_layers` (--gradient_checkpointing) keeps only each decoder layer's input and runs
// the layer again in backward (model/recompute.h); with `residency` (ZeRO-3) every part is
// acquired just before it runs and released after, and layers are always recomputed in backward
// (their weights are gathered again there). `progress`, when set, hears where the pass is.
class RouterBalance;  // model/router_balance.h

struct ForwardOptions {
    bool training = false;
    std::optional<at::Generator> generator;
    bool recompute_layers = false;
    // --fused_kernels (ftlaunch's, on by default): on a GPU, RMSNorm, SwiGLU and RoPE run as the
    // fused kernels and padded or packed batches as variable-length flash attention; off, the
    // composites of ATen ops and SDPA with a mask run instead (the kernels' references, for
    // bisecting a difference). On a CPU both are the composites.
    bool fused_kernels = true;
    // With recompute_layers (and no residency, which recomputes every layer): the last decoder
    // layers that keep their activations instead (--gradient_checkpointing auto).
    int64_t kept_layers = 0;
    // --neftune_noise_alpha: in training, NEFTune's noise on the input embeddings (model/neftune.h),
    // drawn from `generator`; 0 = none.
    double neftune_noise_alpha = 0.0;
    // With recompute_layers: only layers whose index is a multiple of this are recomputed
    // (--activation_checkpointing_kwargs every_n_layers; transformers' rule).
    int64_t recompute_every = 1;
    // Set while a recomputed layer runs again in backward: what it keeps lives only until its
    // gradient is taken, so LoRA's branch is not recomputed a second time.
    bool recomputing = false;
    WeightResidency* residency = nullptr;
    ProgressReport progress;
    // When set (a MoE model, TRL's router_aux_loss_coef != 0): every MoE layer adds its routing to
    // the load-balancing loss and carries its gradient (model/router_balance.h). Shared, so that
    // recomputed layers and backward see the one the forward filled.
    std::shared_ptr<RouterBalance> router_balance;
};

// Holds one part of the weights whole for its lifetime (no-op without a residency); reports
// "<pass> of <part>: gathering its weights (ZeRO-3)" to options.progress before a gather.
class AcquiredPart {
public:
    AcquiredPart(const ForwardOptions& options, int part, const char* pass = "forward")
        : AcquiredPart(options, part, part_name(part), pass) {}
    // For a model whose parts are named otherwise (BART's "encoder layer 2").
    AcquiredPart(const ForwardOptions& options, int part, const std::string& name, const char* pass = "forward")
        : residency_(options.residency), part_(part) {
        if (!residency_) return;
        if (options.progress && residency_->gathers(part))
            options.progress(std::string(pass) + " of " + name + ": gathering its weights (ZeRO-3)");
        residency_->acquire(part_);
    }
    ~AcquiredPart() {
        if (residency_) residency_->release(part_);
    }
    AcquiredPart(const AcquiredPart&) = delete;
    AcquiredPart& operator=(const AcquiredPart&) = delete;

private:
    WeightResidency* residency_;
    int part_;
};

struct DecoderWeights {
    at::Tensor embed_tokens;  // [V, H]
    std::vector<DecoderLayerWeights> layers;
    at::Tensor final_norm;    // [H]
    at::Tensor lm_head;       // [V, H]; the same tensor as embed_tokens when tied
    // A gemma3 checkpoint's vision tower linears (DecoderConfig::vision), never run: weights on the
    // meta device (shapes only), under transformers' module paths (model.vision_tower.encoder.
    // layers.0.self_attn.k_proj, ...) in its module order, so that LoRA adapts them as PEFT does.
    std::vector<std::pair<std::string, Linear>> vision_linears;
};

// (HF parameter name, tensor) for every weight, in the checkpoint's naming
// (model.layers.0.self_attn.q_proj.weight, ...). Tied lm_head is listed once, as embed_tokens.
// Experts' stacks are named as transformers 5 holds them (model.layers.0.mlp.experts.gate_up_proj,
// gpt_oss's biases gate_up_proj_bias) but laid out [E, out, in]; checkpoint_weights gives
// save_pretrained's names and layouts.
std::vector<std::pair<std::string, at::Tensor>> named_weights(const DecoderConfig& config,
                                                             DecoderWeights& weights);

// Tensors named as named_weights names them, renamed as save_pretrained writes them by default
// (transformers' reverse conversion mapping): each expert's linears apart, under the hub's names
// (model.layers.0.mlp.experts.3.up_proj.weight; mixtral: model.layers.0.block_sparse_moe.experts.3.w3.weight
// and block_sparse_moe.gate.weight), as views of the stacks; gpt_oss's stacks keep their names,
// transposed to [E, in, out] (MoeConfig::stacks_in_out); a gemma3 checkpoint's language model under
// language_model.model.* (the tensors beside it: load.h's tensors_beside_language_model).
// Unchanged for a plain causal LM without experts.
std::vector<std::pair<std::string, at::Tensor>> checkpoint_weights(const DecoderConfig& config,
                                                                  const std::vector<std::pair<std::string, at::Tensor>>& named);

// transformers' resize_token_embeddings(new_size, pad_to_multiple_of) with mean resizing:
// the vocabulary becomes new_size rounded up to the multiple; rows past the old vocabulary
// (embed_tokens and an untied lm_head) are set to the mean of the old rows, computed in fp32.
// (transformers draws them from N(mean, 1e-9 * covariance): the same up to ~3e-5 of the rows' spread.)
// Returns the new vocabulary size; shrinking is refused.
int64_t resize_token_embeddings(DecoderConfig& config, DecoderWeights& weights, int64_t new_size,
                                int64_t pad_to_multiple_of = 1);

// The Gemmas' soft cap on logits (final_logit_softcapping): cap * tanh(logits / cap) in the logits'
// type, op for op as transformers computes it; the logits themselves without a cap.
at::Tensor cap_logits(const at::Tensor& logits, std::optional<double> cap);

// DoRA's starting magnitude for `linear` with its adapter: ||W + scaling * B A||_row in fp32, as
// PEFT's DoraLinearLayer.update_layer computes it (B is zero then, so the rows of W), W
// dequantised when 4-bit (QDoRA: PEFT sees the quantised model).
at::Tensor dora_magnitude(const Linear& linear);
// Sets the layer's DoRA magnitudes anew from its weights, in place: after its linears become
// 4-bit, so that they start from the dequantised weights as PEFT's do.
void reset_dora_magnitudes(DecoderLayerWeights& layer);
// x [..., in] -> [..., out] through `linear`, its bias and its adapter.
at::Tensor apply_linear(const Linear& linear, const at::Tensor& x, const ForwardOptions& options);

// The keys and values of the tokens decoded so far, per layer ([N, kv_heads, length, head_dim],
// after RoPE), for decoding one token at a time (transformers' DynamicCache).
struct KeyValueCache {
    std::vector<at::Tensor> keys, values;
    int64_t length = 0;
    // Beam search: row i continues row rows[i] ([N] int64).
    void keep_rows(const at::Tensor& rows);
    // Forget the tokens from `tokens` on (a step run again).
    void truncate(int64_t tokens);
    // Before running a sequence of `length` tokens: keeps at most length - 1 of them (the last
    // token is always run, so a repeated step replaces its own entry) and returns how many are
    // kept; the caller runs the rest.
    int64_t resume(int64_t length);
};

class CausalLM {
public:
    CausalLM(DecoderConfig config, DecoderWeights weights);

    const DecoderConfig& config() const { return config_; }
    DecoderWeights& weights() { return weights_; }
    const DecoderWeights& weights() const { return weights_; }
    int64_t resize_token_embeddings(int64_t new_size, int64_t pad_to_multiple_of = 1) {
        return model::resize_token_embeddings(config_, weights_, new_size, pad_to_multiple_of);
    }
    std::vector<std::pair<std::string, at::Tensor>> named_weights() { return model::named_weights(config_, weights_); }

    // Final-norm hidden states [B, T, H] in the weights' dtype.
    at::Tensor hidden_states(const Batch& batch, const ForwardOptions& options = {}) const;
    // Full logits [B, T, V] (in the weights' dtype, as HF returns them). For tests and small
    // vocabularies: training uses causal_lm_loss, which never materialises them.
    at::Tensor logits(const Batch& batch, const ForwardOptions& options = {}) const;
    // Final-norm hidden states [N, t, H] (eval mode) of `new_ids` [N, t] following the cache's
    // tokens, appending their keys and values; `attention_mask` [N, cached + t] covers every
    // token (1 = real), `position_ids` [N, t] the new ones. Equal to hidden_states() over the whole
    // sequence at those positions.
    at::Tensor decode_step(const at::Tensor& new_ids, const at::Tensor& attention_mask, const at::Tensor& position_ids,
                           KeyValueCache& cache, const ForwardOptions& options = {}) const;
    // lm_head over hidden states: [..., H] -> [..., V] (divided by granite's logits_scaling, capped
    // by gemma2's final_logit_softcapping).
    at::Tensor head(const at::Tensor& hidden, const ForwardOptions& options = {}) const;
    // The input embeddings of ids [B, T], on ids' device. A table kept in host memory while ids are
    // on a GPU (frozen embeddings left off the device) gathers its rows on the host from
    // `host_ids` (a copy of ids when undefined: that waits for the device) into pinned memory and
    // copies them up without waiting: the same values as a lookup on the device. Multiplied by
    // granite's embedding_multiplier or the Gemmas' sqrt(hidden_size). With `training` options that
    // ask for it, NEFTune's noise is added to the embedding module's output, as transformers hooks
    // it: before granite's multiplier, after the Gemmas' scale (part of their module).
    at::Tensor embed(const at::Tensor& ids, const at::Tensor& host_ids = {}, const ForwardOptions* training = nullptr) const;

private:
    // The layer's MLP over y [B, T, H]: gate/up/down (or phi3's fused pair), or the experts.
    at::Tensor mlp_forward(const DecoderLayerWeights& layer, const at::Tensor& y, const ForwardOptions& options) const;
    // With `cache` (decode_step), the layer's keys and values join those of the earlier tokens.
    at::Tensor layer_forward(const DecoderLayerWeights& layer, const at::Tensor& hidden, const RopeTables& rope,
                             const AttentionPattern& attention, const ForwardOptions& options, KeyValueCache* cache = nullptr,
                             size_t layer_index = 0) const;

    DecoderConfig config_;
    DecoderWeights weights_;
};

}  // namespace ftl::model
