// config.json and safetensors -> Seq2SeqLM (model/bart.h).
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "model/bart.h"
#include "model/config_reader.h"
#include "model/tensor_io.h"
#include "model/weight_reader.h"
#include "util/error.h"
#include "util/files.h"

namespace ftl::model {

BartConfig read_bart_config(const std::string& model_dir) {
    const std::string source = model_dir + "/config.json";
    const auto text = read_text_file(source);
    if (!text) fail(ErrorKind::kConfig, source + ": cannot read (is " + model_dir + " a model folder?)");
    const nlohmann::json j = parse_json_object(*text, source);
    const ConfigReader r(j, source);
    BartConfig c;
    if (r.text("model_type", "") != "bart") r.bad("model_type", "must be bart for an encoder-decoder model in this build");
    c.vocab_size = r.integer("vocab_size");
    c.d_model = r.integer("d_model");
    c.encoder_layers = r.integer("encoder_layers", std::nullopt, 0);
    c.decoder_layers = r.integer("decoder_layers", std::nullopt, 0);
    c.encoder_attention_heads = r.integer("encoder_attention_heads");
    c.decoder_attention_heads = r.integer("decoder_attention_heads");
    if (c.d_model % c.encoder_attention_heads != 0) r.bad("encoder_attention_heads", "must divide d_model");
    if (c.d_model % c.decoder_attention_heads != 0) r.bad("decoder_attention_heads", "must divide d_model");
    c.encoder_ffn_dim = r.integer("encoder_ffn_dim");
    c.decoder_ffn_dim = r.integer("decoder_ffn_dim");
    c.max_position_embeddings = r.integer("max_position_embeddings");
    c.activation_function = r.text("activation_function", "gelu");
    if (c.activation_function != "gelu" && c.activation_function != "gelu_new" && c.activation_function != "relu")
        r.bad("activation_function", "must be gelu, gelu_new or relu in this build");
    c.scale_embedding = r.boolean("scale_embedding", false);
    auto probability = [&r](const char* key, double fallback) {
        const double p = r.number(key, fallback);
        if (!(p >= 0.0 && p < 1.0)) r.bad(key, "must be a probability in [0, 1)");
        return p;
    };
    c.dropout = probability("dropout", 0.1);
    c.attention_dropout = probability("attention_dropout", 0.0);
    c.activation_dropout = probability("activation_dropout", 0.0);
    for (const char* key : {"encoder_layerdrop", "decoder_layerdrop"})
        if (r.number(key, 0.0) != 0.0) r.bad(key, "must be 0: layerdrop (skipping whole layers in training) is not in this build");
    c.pad_token_id = r.integer("pad_token_id", 1, 0);
    c.bos_token_id = r.integer("bos_token_id", 0, 0);
    c.eos_token_id = r.integer("eos_token_id", 2, 0);
    c.decoder_start_token_id = r.integer("decoder_start_token_id", 2, 0);
    if (r.has("forced_eos_token_id")) c.forced_eos_token_id = r.integer("forced_eos_token_id", std::nullopt, 0);
    if (!r.boolean("tie_word_embeddings", true))
        r.bad("tie_word_embeddings", "must be true: this build ties BART's lm_head to its shared embeddings");
    c.torch_dtype = r.text("dtype", r.text("torch_dtype", ""));
    return c;
}

LoadedSeq2Seq load_bart(const std::string& model_dir, const LoadOptions& options) {
    BartConfig config = read_bart_config(model_dir);
    const at::ScalarType dtype =
        options.dtype ? *options.dtype
                      : (config.torch_dtype.empty() ? at::kFloat
                                                    : parse_float_dtype(config.torch_dtype, model_dir + "/config.json: dtype"));
    const io::Checkpoint ckpt = io::Checkpoint::open(model_dir);
    WeightReader r(ckpt, dtype, options.device, options.keep_mapped);
    const int64_t H = config.d_model;
    BartWeights w;
    // Older files store the tied embeddings under the encoder's (and decoder's) name too.
    const std::string shared = r.contains("model.shared.weight") ? "model.shared.weight" : "model.encoder.embed_tokens.weight";
    w.shared = r.read(shared, {config.vocab_size, H});
    for (const char* tied : {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"})
        if (tied != shared && r.contains(tied)) r.read(tied, {config.vocab_size, H});  // the same values, marked used
    w.final_logits_bias = r.contains("final_logits_bias") ? r.read("final_logits_bias", {1, config.vocab_size})
                                                          : at::zeros({1, config.vocab_size},
                                                                      at::TensorOptions().dtype(dtype).device(options.device));
    auto linear = [&](const std::string& name, int64_t out, int64_t in) {
        return Linear{r.read(name + ".weight", {out, in}), r.read(name + ".bias", {out}), std::nullopt, nullptr, nullptr};
    };
    auto norm = [&](const std::string& name) { return LayerNorm{r.read(name + ".weight", {H}), r.read(name + ".bias", {H})}; };
    auto attention = [&](const std::string& name) {
        return BartAttention{linear(name + ".q_proj", H, H), linear(name + ".k_proj", H, H), linear(name + ".v_proj", H, H),
                             linear(name + ".out_proj", H, H)};
    };
    auto stack = [&](const std::string& prefix, int64_t layers, int64_t ffn, bool cross) {
        BartStack s;
        s.positions = r.read(prefix + ".embed_positions.weight", {config.max_position_embeddings + 2, H});
        s.layernorm_embedding = norm(prefix + ".layernorm_embedding");
        for (int64_t i = 0; i < layers; ++i) {
            const std::string p = prefix + ".layers." + std::to_string(i) + ".";
            BartLayer l;
            l.self_attn = attention(p + "self_attn");
            l.self_attn_layer_norm = norm(p + "self_attn_layer_norm");
            if (cross) {
                l.cross_attn = attention(p + "encoder_attn");
                l.cross_attn_layer_norm = norm(p + "encoder_attn_layer_norm");
            }
            l.fc1 = linear(p + "fc1", ffn, H);
            l.fc2 = linear(p + "fc2", H, ffn);
            l.final_layer_norm = norm(p + "final_layer_norm");
            s.layers.push_back(std::move(l));
        }
        return s;
    };
    w.encoder = stack("model.encoder", config.encoder_layers, config.encoder_ffn_dim, false);
    w.decoder = stack("model.decoder", config.decoder_layers, config.decoder_ffn_dim, true);
    std::vector<std::string> unused = r.unused();
    return {Seq2SeqLM(std::move(config), std::move(w)), std::move(unused)};
}

}  // namespace ftl::model
