// config.json -> the typed shape of a Llama-family decoder (llama, mistral, qwen2, qwen3, granite,
// smollm3).
//
// Reads both layouts found on the hub: transformers 5's `rope_parameters` ({rope_type, rope_theta,
// factor, ...}) and the older top-level `rope_theta` + `rope_scaling` ({type|rope_type, factor,
// ...}). Defaults are transformers' own (LlamaConfig, MistralConfig, Qwen2Config).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ftl::model {

enum class RopeType { kDefault, kLinear, kDynamic, kLlama3 };

struct RopeConfig {
    RopeType type = RopeType::kDefault;
    double theta = 10000.0;
    double factor = 1.0;                       // linear, dynamic, llama3
    double low_freq_factor = 1.0;              // llama3
    double high_freq_factor = 4.0;             // llama3
    int64_t original_max_position_embeddings = 0;  // llama3 (defaults to max_position_embeddings)
};

struct DecoderConfig {
    std::string model_type;  // "llama" | "mistral" | "qwen2" | "qwen3" | "granite" | "smollm3"
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
    // qwen3: an RMSNorm over each head's head_dim on q and on k (self_attn.q_norm, k_norm), after
    // the projection and before the rotation.
    bool qk_norm = false;
    // granite's scalars (1 elsewhere): the embeddings are multiplied by embedding_multiplier, each
    // block's output (attention's, the MLP's) by residual_multiplier before it joins the residual
    // stream, and the logits divided by logits_scaling; attention scores are scaled by
    // attention_multiplier instead of 1/sqrt(head_dim).
    double embedding_multiplier = 1.0;
    double residual_multiplier = 1.0;
    double logits_scaling = 1.0;
    std::optional<double> attention_multiplier;
    RopeConfig rope;
    // Per layer: the sliding attention window in tokens (a key is seen when q - k < window), or
    // nullopt for full causal attention.
    std::vector<std::optional<int64_t>> layer_window;
    // Per layer: whether q and k are rotated (smollm3's no_rope_layers leave some out; all elsewhere).
    std::vector<bool> layer_rope;
    std::string torch_dtype;  // as written ("bfloat16", "float32", ...); empty when absent
    // A bitsandbytes 4-bit checkpoint (quantization_config with load_in_4bit): the compute dtype
    // its 4-bit linears run in ("float32" when not given, as BitsAndBytesConfig defaults); empty
    // for a floating-point checkpoint.
    std::string bnb_4bit_compute_dtype;
    bool bnb_4bit_nested = false;  // bnb_4bit_use_double_quant: the absmax values 8-bit quantised
    std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
};

// The model types this build runs; the error for any other lists them.
const std::vector<std::string>& supported_model_types();

// Parses config.json text; `source` names the file in errors (ftl::Error kConfig naming the key,
// the value and the rule).
DecoderConfig parse_decoder_config(const std::string& json_text, const std::string& source);
DecoderConfig read_decoder_config(const std::string& model_dir);

}  // namespace ftl::model
