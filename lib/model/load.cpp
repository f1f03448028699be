#include "model/load.h"

#include "io/checkpoint.h"
#include "model/tensor_io.h"
#include "model/weight_reader.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::model {
namespace {

// gpt_oss's router (mlp.router, with a bias) and stacks: [E, in, out] with biases, transposed here
// to [E, out, in], or (the hub's checkpoints) MXFP4 blocks already [E, out, in], dequantised.
void read_gpt_oss_experts(WeightReader& r, const DecoderConfig& config, const std::string& p,
                          std::optional<at::ScalarType> dtype, DecoderLayerWeights& l) {
    const int64_t experts = config.moe->num_experts, width = config.moe->expert_intermediate_size, H = config.hidden_size;
    l.router.weight = r.read(p + "mlp.router.weight", {experts, H}, dtype);
    l.router.bias = r.read(p + "mlp.router.bias", {experts}, dtype);
    auto stack = [&](const std::string& name, int64_t out, int64_t in) {
        if (!r.contains(name) && r.contains(name + "_blocks")) return r.read_mxfp4(name, {experts, out, in}, dtype);
        return r.read(name, {experts, in, out}, dtype).transpose(1, 2).contiguous();
    };
    l.experts_gate_up.weight = stack(p + "mlp.experts.gate_up_proj", 2 * width, H);
    l.experts_gate_up.bias = r.read(p + "mlp.experts.gate_up_proj_bias", {experts, 2 * width}, dtype);
    l.experts_down.weight = stack(p + "mlp.experts.down_proj", H, width);
    l.experts_down.bias = r.read(p + "mlp.experts.down_proj_bias", {experts, H}, dtype);
}

// Layer i's router and experts' stacks (DecoderLayerWeights::moe), from transformers 5's stacked
// tensors (mlp.experts.gate_up_proj, save_pretrained with save_original_format=False) or, as the hub
// and save_pretrained's default write them, one tensor per expert's linear, stacked here; gpt_oss's
// as read_gpt_oss_experts reads them.
void read_experts(WeightReader& r, const DecoderConfig& config, int64_t i, std::optional<at::ScalarType> dtype,
                  bool stack_late, DecoderLayerWeights& l) {
    const MoeConfig& moe = *config.moe;
    const int64_t experts = moe.num_experts, width = moe.expert_intermediate_size, H = config.hidden_size;
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const MoeConfig::CheckpointNames names = moe.checkpoint_names();
    const std::string hub = p + names.block + ".";
    l.moe = true;
    l.router_first = moe.router_first;
    l.router_path = "mlp." + moe.router_name;
    if (moe.stacks_in_out) return read_gpt_oss_experts(r, config, p, dtype, l);
    l.router.weight = r.read(r.contains(p + "mlp.gate.weight") ? p + "mlp.gate.weight" : hub + "gate.weight", {experts, H}, dtype);
    if (r.contains(p + "mlp.experts.gate_up_proj")) {
        l.experts_gate_up.weight = r.read(p + "mlp.experts.gate_up_proj", {experts, 2 * width, H}, dtype);
        l.experts_down.weight = r.read(p + "mlp.experts.down_proj", {experts, H, width}, dtype);
        return;
    }
    for (int64_t e = 0; e < experts; ++e) {
        const std::string expert = hub + "experts." + std::to_string(e) + ".";
        l.gate_up_pieces.push_back(r.read(expert + names.gate + ".weight", {width, H}, dtype));
        l.gate_up_pieces.push_back(r.read(expert + names.up + ".weight", {width, H}, dtype));
        l.down_pieces.push_back(r.read(expert + names.down + ".weight", {H, width}, dtype));
    }
    if (!stack_late) return stack_experts(l);
    const auto meta = at::TensorOptions().device(at::kMeta).dtype(l.down_pieces.front().scalar_type());
    l.experts_gate_up.weight = at::empty({experts, 2 * width, H}, meta);
    l.experts_down.weight = at::empty({experts, H, width}, meta);
}

// Where the checkpoint keeps the decoder's tensors: model.* (a causal LM), or under a gemma3
// checkpoint's language model: the hub's language_model.model.* or transformers 5's
// model.language_model.* (save_pretrained with save_original_format=False).
std::string language_model_prefix(const DecoderConfig& config, const WeightReader& r) {
    if (!config.vision) return "model.";
    return r.contains("language_model.model.embed_tokens.weight") ? "language_model.model." : "model.language_model.";
}

// The vision tower's linears as shapes (meta tensors) under transformers' module paths.
std::vector<std::pair<std::string, Linear>> vision_linears(const VisionTower& tower) {
    std::vector<std::pair<std::string, Linear>> out;
    for (int64_t i = 0; i < tower.num_layers; ++i)
        for (const VisionTower::LinearShape& l : tower.layer_linears()) {
            Linear linear;
            linear.weight = at::empty({l.out, l.in}, at::TensorOptions().device(at::kMeta));
            out.emplace_back("model.vision_tower.encoder.layers." + std::to_string(i) + "." + l.path, std::move(linear));
        }
    return out;
}

}  // namespace

LoadedModel load_causal_lm(const std::string& model_dir, const LoadOptions& options) {
    DecoderConfig config = read_decoder_config(model_dir);
    const at::ScalarType dtype =
        options.dtype ? *options.dtype
                      : (config.torch_dtype.empty()
                             ? at::kFloat
                             : parse_float_dtype(config.torch_dtype, model_dir + "/config.json: dtype"));
    const io::Checkpoint ckpt = io::Checkpoint::open(model_dir);
    WeightReader r(ckpt, dtype, options.device, options.keep_mapped);
    const int64_t H = config.hidden_size, I = config.intermediate_size, d = config.head_dim;
    const int64_t q_out = config.num_heads * d, kv_out = config.num_kv_heads * d;
    const at::ScalarType four_bit_compute =
        config.bnb_4bit_compute_dtype.empty()
            ? at::kFloat
            : parse_float_dtype(config.bnb_4bit_compute_dtype, model_dir + "/config.json: quantization_config.bnb_4bit_compute_dtype");

    DecoderWeights w;
    const std::string lm = language_model_prefix(config, r);
    w.embed_tokens = r.read(lm + "embed_tokens.weight", {config.vocab_size, H});
    for (int64_t i = 0; i < config.num_layers; ++i) {
        const std::string p = lm + "layers." + std::to_string(i) + ".";
        DecoderLayerWeights l;
        l.input_norm = r.read_if(!config.post_norms, p + "input_layernorm.weight", {H});
        auto linear = [&](const std::string& path, int64_t out, int64_t in, bool bias) {
            WeightReader::LinearWeight saved =
                r.read_linear(p + path + ".weight", {out, in}, four_bit_compute, options.linear_dtype, config.llm_int8_threshold);
            return Linear{saved.weight, r.read_if(bias, p + path + ".bias", {out}, options.linear_dtype), std::nullopt,
                          saved.four_bit, saved.int8};
        };
        l.fused_projections = config.fused_projections;
        if (config.fused_projections) {
            l.qkv_proj = linear("self_attn.qkv_proj", q_out + 2 * kv_out, H, config.qkv_bias);
        } else {
            l.q_proj = linear("self_attn.q_proj", q_out, H, config.qkv_bias);
            l.k_proj = linear("self_attn.k_proj", kv_out, H, config.qkv_bias);
            l.v_proj = linear("self_attn.v_proj", kv_out, H, config.qkv_bias);
        }
        l.o_proj = linear("self_attn.o_proj", H, q_out, config.o_bias);
        l.q_norm = r.read_if(config.qk_norm, p + "self_attn.q_norm.weight", {config.qk_norm_whole ? q_out : d});
        l.k_norm = r.read_if(config.qk_norm, p + "self_attn.k_norm.weight", {config.qk_norm_whole ? kv_out : d});
        l.sinks = r.read_if(config.attention_sinks, p + "self_attn.sinks", {config.num_heads});
        l.post_attention_norm = r.read(p + "post_attention_layernorm.weight", {H});
        l.pre_feedforward_norm = r.read_if(config.sandwich_norms, p + "pre_feedforward_layernorm.weight", {H});
        l.post_feedforward_norm =
            r.read_if(config.sandwich_norms || config.post_norms, p + "post_feedforward_layernorm.weight", {H});
        if (config.is_moe_layer(static_cast<size_t>(i))) {
            read_experts(r, config, i, options.linear_dtype, options.keep_mapped && options.stack_experts_late, l);
        } else {
            if (config.fused_projections) {
                l.gate_up_proj = linear("mlp.gate_up_proj", 2 * I, H, config.mlp_bias);
            } else {
                l.gate_proj = linear("mlp.gate_proj", I, H, config.mlp_bias);
                l.up_proj = linear("mlp.up_proj", I, H, config.mlp_bias);
            }
            l.down_proj = linear("mlp.down_proj", H, I, config.mlp_bias);
        }
        w.layers.push_back(std::move(l));
    }
    w.final_norm = r.read(lm + "norm.weight", {H});
    // transformers 4's gemma3 kept the head inside its language model (language_model.lm_head).
    const std::string head = r.contains("language_model.lm_head.weight") ? "language_model.lm_head.weight" : "lm_head.weight";
    w.lm_head = config.tie_word_embeddings ? w.embed_tokens : r.read(head, {config.vocab_size, H}, options.head_dtype);
    if (config.vision) w.vision_linears = vision_linears(*config.vision);
    std::vector<std::string> unused = r.unused();
    return {CausalLM(std::move(config), std::move(w)), std::move(unused)};
}

std::vector<std::pair<std::string, at::Tensor>> tensors_beside_language_model(const std::string& model_dir) {
    const io::Checkpoint ckpt = io::Checkpoint::open(model_dir);
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const std::string& name : ckpt.names())
        if (!starts_with(name, "language_model.") && !starts_with(name, "model.language_model.") && name != "lm_head.weight")
            out.emplace_back(name, mapped_tensor(ckpt.shared_file_of(name), name));
    return out;
}

void stack_experts(DecoderLayerWeights& layer) {
    if (layer.down_pieces.empty()) return;
    const int64_t experts = static_cast<int64_t>(layer.down_pieces.size());
    const at::Tensor gate_up = at::cat(layer.gate_up_pieces);  // [E * 2I, H]
    layer.experts_gate_up.weight = gate_up.view({experts, gate_up.size(0) / experts, gate_up.size(1)});
    layer.experts_down.weight = at::stack(layer.down_pieces);
    layer.gate_up_pieces.clear();
    layer.down_pieces.clear();
}

}  // namespace ftl::model
