// config.json -> the typed shape of a Llama-family decoder (llama, mistral, qwen2, qwen3, granite,
// smollm3) or a Gemma (gemma, gemma2, gemma3_text: the same decoder with the changes DecoderConfig
// lists).
//
// Reads both layouts found on the hub: transformers 5's `rope_parameters` ({rope_type, rope_theta,
// factor, ...}) and the older top-level `rope_theta` + `rope_scaling` ({type|rope_type, factor,
// ...}). Defaults are transformers' own (LlamaConfig, MistralConfig, Qwen2Config, Gemma*Config).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ftl::model {

enum class RopeType { kDefault, kLinear, kDynamic, kLlama3, kLongrope, kYarn };

struct RopeConfig {
    RopeType type = RopeType::kDefault;
    double theta = 10000.0;
    double factor = 1.0;                       // linear, dynamic, llama3, longrope, yarn
    double low_freq_factor = 1.0;              // llama3
    double high_freq_factor = 4.0;             // llama3
    int64_t original_max_position_embeddings = 0;  // llama3, longrope, yarn (defaults to max_position_embeddings)
    double partial_rotary_factor = 1.0;        // phi3: the share of head_dim that is rotated
    // longrope (Phi-3.5, Phi-4-mini; HF _compute_longrope_parameters): one divisor per frequency,
    // the short ones while a batch's positions stay within original_max_position_embeddings, the
    // long ones past it; cos and sin are multiplied by attention_factor (default
    // sqrt(1 + ln(factor) / ln(original)), factor max_position_embeddings / original).
    std::vector<double> short_factor, long_factor;
    // longrope and yarn: cos and sin are multiplied by it.
    double attention_factor = 1.0;
    // yarn (YaRN, Peng et al. 2023; HF _compute_yarn_parameters): frequencies blended from the
    // original ("extrapolation") and the factor-divided ones ("interpolation") over a linear ramp
    // between the dims where the original context turns beta_fast and beta_slow times (floored /
    // ceiled when `truncate`); attention_factor defaults to 0.1 ln(factor) + 1 (or DeepSeek's
    // ratio of two such terms with mscale / mscale_all_dim).
    double beta_fast = 32.0, beta_slow = 1.0;
    bool truncate = true;
};

// A mixture-of-experts MLP (qwen3_moe, mixtral), as transformers 5 holds it: a router (mlp.gate,
// [E, H]) scores each token's experts; the top k run, each a SwiGLU MLP whose weights are slices of
// two stacked tensors (mlp.experts.gate_up_proj [E, 2I, H], gate rows first, and down_proj [E, H, I]),
// and their outputs are summed weighted by the routing probabilities (Qwen3MoeSparseMoeBlock,
// MixtralSparseMoeBlock; Shazeer et al. 2017's top-k gating).
struct MoeConfig {
    int64_t num_experts = 0;              // E: num_experts (qwen3_moe), num_local_experts (mixtral)
    int64_t experts_per_token = 0;        // k: num_experts_per_tok
    int64_t expert_intermediate_size = 0; // I of each expert: moe_intermediate_size (qwen3_moe), intermediate_size (mixtral)
    // The top k probabilities are divided by their sum (mixtral always; qwen3_moe's norm_topk_prob).
    bool normalize_top_k = true;
    // qwen3_moe rounds the routing weights to the router logits' type before they scale the experts'
    // outputs; mixtral keeps them in fp32 (the product is promoted, then rounded once).
    bool weights_in_logits_type = true;
    // How the checkpoint names the experts on the hub and in save_pretrained's default output
    // (transformers' conversion mapping): qwen3_moe mlp.experts.<e>.gate_proj|up_proj|down_proj,
    // mixtral block_sparse_moe.experts.<e>.w1|w3|w2 and block_sparse_moe.gate.
    bool mixtral_names = false;
    // MixtralSparseMoeBlock registers its router (mlp.gate) before its experts, Qwen3MoeSparseMoeBlock
    // after them: the order PEFT adapts them in and named_parameters lists them.
    bool router_first = false;
    std::string router_name = "gate";  // the router's module inside mlp: gate, or gpt_oss's router
    // gpt_oss's experts (GptOssTopKRouter, GptOssExperts; false or none elsewhere):
    //  - softmax_after_top_k: the k largest router logits are chosen first and softmaxed among
    //    themselves in the logits' type (the weights then sum to 1: no normalize_top_k);
    //  - biases: the router (mlp.router.bias [E]) and the experts' stacks (gate_up_proj_bias
    //    [E, 2I], down_proj_bias [E, H]) add biases;
    //  - interleaved_gate_up: gate_up_proj's outputs alternate gate, up (gate = even columns);
    //  - swiglu_limit: the clamped SwiGLU, (clamp(up, -limit, limit) + 1) * g * sigmoid(swiglu_alpha g)
    //    with g = min(gate, limit), instead of the model's activation;
    //  - stacks_in_out: checkpoints (and transformers' memory) hold the stacks as [E, in, out], the
    //    transpose of this build's [E, out, in], and have no per-expert layout; the hub's stacks may
    //    be MXFP4 (quant/mxfp4.h), dequantised on load.
    bool softmax_after_top_k = false, biases = false, interleaved_gate_up = false, stacks_in_out = false;
    std::optional<double> swiglu_limit;
    double swiglu_alpha = 1.702;
    // router_aux_loss_coef (0.001 in all three configs' defaults; gpt-oss's released config.json
    // says 0.9): the weight of the router's load-balancing loss in training (model/router_balance.h).
    double router_aux_loss_coef = 0.001;

    // Those names: the block's module inside a layer and each expert's three linears (transformers
    // 4's names, which PEFT's target mapping also reads).
    struct CheckpointNames {
        std::string block, gate, up, down;
    };
    CheckpointNames checkpoint_names() const {
        if (mixtral_names) return {"block_sparse_moe", "w1", "w3", "w2"};
        return {"mlp", "gate_proj", "up_proj", "down_proj"};
    }
};

// Gemma 3's image-and-text checkpoints (model_type gemma3, Gemma3ForConditionalGeneration): the
// decoder is the language model (text_config, a gemma3_text); the SigLIP vision tower (vision_config)
// and the projector are never run (ftlaunch trains on text), but carried: PEFT adapts the tower's
// linears too, and a full fine-tune writes them back as they were.
struct VisionTower {
    int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0;
    int64_t image_size = 0, patch_size = 0, num_channels = 3;
    // Each encoder layer's linears in transformers' module order (SiglipAttention creates k, v, q,
    // then out_proj; the MLP fc1, fc2): (path inside the layer, out, in), all with biases.
    struct LinearShape {
        std::string path;
        int64_t out, in;
    };
    std::vector<LinearShape> layer_linears() const {
        const int64_t h = hidden_size, i = intermediate_size;
        return {{"self_attn.k_proj", h, h}, {"self_attn.v_proj", h, h}, {"self_attn.q_proj", h, h},
                {"self_attn.out_proj", h, h}, {"mlp.fc1", i, h}, {"mlp.fc2", h, i}};
    }
    // Parameters of the tower and the projector (mm_input_projection_weight [h, text hidden],
    // mm_soft_emb_norm [h]), as transformers counts them.
    int64_t parameters(int64_t text_hidden_size) const;
};

// The MLP's gate activation: silu (the Llama family) or GELU's tanh approximation (the Gemmas'
// gelu_pytorch_tanh, torch's gelu(approximate="tanh")).
enum class GateActivation { kSilu, kGeluTanh };

struct DecoderConfig {
    std::string model_type;  // one of supported_model_types()
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t num_layers = 0;
    int64_t num_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    double rms_norm_eps = 1e-6;
    int64_t max_position_embeddings = 2048;
    bool tie_word_embeddings = false;
    bool qkv_bias = false;    // qwen2: always; llama, qwen3, granite: attention_bias
    bool o_bias = false;      // llama, qwen3, granite: attention_bias
    bool mlp_bias = false;    // llama, granite: mlp_bias
    // phi3: q, k and v come from one linear (self_attn.qkv_proj [n_h*d + 2*n_kv*d, H], split in that
    // order) and gate and up from another (mlp.gate_up_proj [2I, H], gate first), as PEFT sees them.
    bool fused_projections = false;
    // qwen3: an RMSNorm over each head's head_dim on q and on k (self_attn.q_norm, k_norm), after
    // the projection and before the rotation.
    bool qk_norm = false;
    // granite's scalars (1 elsewhere): the embeddings are multiplied by embedding_multiplier, each
    // block's output (attention's, the MLP's) by residual_multiplier before it joins the residual
    // stream, and the logits divided by logits_scaling; attention scores are scaled by
    // attention_multiplier instead of 1/sqrt(head_dim) (granite's own; gemma2 and gemma3's
    // query_pre_attn_scalar^-1/2).
    double embedding_multiplier = 1.0;
    double residual_multiplier = 1.0;
    double logits_scaling = 1.0;
    std::optional<double> attention_multiplier;
    GateActivation activation = GateActivation::kSilu;
    // The Gemmas' changes to the Llama decoder (false / none elsewhere):
    //  - unit_offset_norms: every RMSNorm scales by (1 + weight), in fp32, rounding once at the end
    //    (GemmaRMSNorm; Llama's rounds the normalised x first and multiplies by weight after);
    //  - embeddings_scaled: the embeddings are multiplied by sqrt(hidden_size) rounded to the
    //    table's type (Gemma*TextScaledWordEmbedding: sqrt(2304) = 48 exactly, sqrt(3072) 55.5 in bf16);
    //  - sandwich_norms (gemma2, gemma3): attention's and the MLP's outputs are normalised
    //    (post_attention_layernorm, post_feedforward_layernorm) before they join the residual
    //    stream, and the MLP's input by pre_feedforward_layernorm;
    //  - attn_logit_softcapping (gemma2): scores become cap * tanh(scores / cap) before the mask;
    //  - final_logit_softcapping (gemma2; gemma3 when set): logits become cap * tanh(logits / cap);
    //  - sliding_rope (gemma3): the rotation of the layers with a sliding window, whose base
    //    (rope_local_base_freq) differs from the full-attention layers' `rope`.
    bool unit_offset_norms = false;
    bool embeddings_scaled = false;
    bool sandwich_norms = false;
    // OLMo 2 and 3's changes (olmo2, olmo3):
    //  - post_norms: no input norm and no pre-feedforward norm; attention's and the MLP's outputs
    //    are normalised (post_attention_layernorm, post_feedforward_layernorm) before they join
    //    the residual stream;
    //  - qk_norm_whole (with qk_norm): q_norm and k_norm normalise the whole projections
    //    ([n_h*d], [n_kv*d]) before they are split into heads (qwen3's normalise each head);
    //  - weight_in_fp32_norms: RMSNorm multiplies its weight with the fp32 normalised x and rounds
    //    once (Olmo2RMSNorm; Llama's rounds the normalised x first); olmo3's sliding layers rotate
    //    with sliding_rope.
    bool post_norms = false;
    bool qk_norm_whole = false;
    bool weight_in_fp32_norms = false;
    // Mixture-of-experts MLPs; `layer_moe[i]` says which layers have one (qwen3_moe's mlp_only_layers
    // and decoder_sparse_step leave some dense, with intermediate_size).
    std::optional<MoeConfig> moe;
    std::vector<bool> layer_moe;
    bool is_moe_layer(size_t i) const { return moe && layer_moe.at(i); }
    std::optional<double> attn_logit_softcapping;
    std::optional<double> final_logit_softcapping;
    // gpt_oss: a learned logit per head (self_attn.sinks [n_h]) joins every query's softmax as a key
    // without a value, so the weights over the real keys sum to less than 1 (GptOssAttention).
    bool attention_sinks = false;
    std::optional<RopeConfig> sliding_rope;
    RopeConfig rope;
    // Per layer: the sliding attention window in tokens (a key is seen when q - k < window), or
    // nullopt for full causal attention.
    std::vector<std::optional<int64_t>> layer_window;
    // Per layer: whether q and k are rotated (smollm3's no_rope_layers leave some out; all elsewhere).
    std::vector<bool> layer_rope;
    // The leading dims of each head that are rotated: transformers' int(head_dim x
    // partial_rotary_factor) (head_dim unless phi3 says otherwise).
    int64_t rotary_dim() const {
        return static_cast<int64_t>(static_cast<double>(head_dim) * rope.partial_rotary_factor);
    }
    // Layer i's rotation: sliding_rope for a windowed layer when the model has one, else rope.
    const RopeConfig& rope_of_layer(size_t i) const {
        return sliding_rope && layer_window.at(i) ? *sliding_rope : rope;
    }
    std::string torch_dtype;  // as written ("bfloat16", "float32", ...); empty when absent
    // A bitsandbytes 4-bit checkpoint (quantization_config with load_in_4bit): the compute dtype
    // its 4-bit linears run in ("float32" when not given, as BitsAndBytesConfig defaults); empty
    // for a floating-point checkpoint.
    std::string bnb_4bit_compute_dtype;
    bool bnb_4bit_nested = false;  // bnb_4bit_use_double_quant: the absmax values 8-bit quantised
    // A bitsandbytes 8-bit checkpoint (load_in_8bit): its llm_int8_threshold (quant/int8.h).
    std::optional<double> llm_int8_threshold;
    // A gemma3 checkpoint's vision tower (model_type then reads gemma3_text: its language model).
    std::optional<VisionTower> vision;
    // Where the decoder's modules live in transformers' model (PEFT's adapter names):
    // model.layers.0... or, under a vision tower, model.language_model.layers.0...
    std::string module_prefix() const { return vision ? "model.language_model." : "model."; }
    // gpt_oss as the hub holds it (quantization_config quant_method mxfp4): the experts' stacks in
    // MXFP4 (quant/mxfp4.h), dequantised on load; everything else floating point.
    bool mxfp4_checkpoint = false;
    std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
};

// The model types this build runs; the error for any other lists them.
const std::vector<std::string>& supported_model_types();

// Parses config.json text; `source` names the file in errors (ftl::Error kConfig naming the key,
// the value and the rule).
DecoderConfig parse_decoder_config(const std::string& json_text, const std::string& source);
DecoderConfig read_decoder_config(const std::string& model_dir);

}  // namespace ftl::model
