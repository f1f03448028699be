#include "model/load.h"

#include <set>
#include <sstream>

#include "io/checkpoint.h"
#include "model/tensor_io.h"
#include "quant/four_bit.h"
#include "util/error.h"

namespace ftl::model {
namespace {

std::string shape_text(at::IntArrayRef shape) {
    std::ostringstream s;
    s << shape;
    return s.str();
}

class WeightReader {
public:
    WeightReader(const io::Checkpoint& ckpt, at::ScalarType dtype, at::Device device, bool keep_mapped)
        : ckpt_(ckpt), dtype_(dtype), device_(device), keep_mapped_(keep_mapped) {}

    at::Tensor read(const std::string& name, std::vector<int64_t> expected_shape) {
        if (!ckpt_.contains(name))
            fail(ErrorKind::kConfig, ckpt_.dir() + ": the checkpoint has no tensor '" + name +
                                         "' that config.json implies (wrong config or truncated checkpoint?)");
        const io::TensorView view = ckpt_.tensor(name);
        if (view.shape != expected_shape)
            fail(ErrorKind::kConfig, ckpt_.file_of(name).path() + ": tensor '" + name + "' has shape " +
                                         shape_text(view.shape) + " but config.json implies " +
                                         shape_text(expected_shape));
        if (view.dtype == io::DType::kBool || view.dtype == io::DType::kU8 ||
            view.dtype == io::DType::kI8 || view.dtype == io::DType::kI16 ||
            view.dtype == io::DType::kI32 || view.dtype == io::DType::kI64)
            fail(ErrorKind::kConfig, ckpt_.file_of(name).path() + ": tensor '" + name + "' has dtype " +
                                         io::dtype_name(view.dtype) +
                                         " (floating point expected)");
        used_.insert(name);
        at::Tensor mapped = mapped_tensor(ckpt_.shared_file_of(name), name);
        if (keep_mapped_) return mapped;
        // One pass from the mapped bytes to the target dtype and device.
        return mapped.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true);
    }
    at::Tensor read_if(bool present, const std::string& name, std::vector<int64_t> shape) {
        return present ? read(name, std::move(shape)) : at::Tensor();
    }
    // A linear's weight: floating point, or (a bitsandbytes 4-bit checkpoint) packed codes with
    // their state, kept in their storage dtype on the device (or mapped).
    std::pair<at::Tensor, std::shared_ptr<const quant::FourBitState>> read_linear(
        const std::string& name, std::vector<int64_t> expected_shape, at::ScalarType compute_dtype) {
        auto saved = [&](const std::string& key) -> at::Tensor {
            if (!ckpt_.contains(key)) return {};
            used_.insert(key);
            return mapped_tensor(ckpt_.shared_file_of(key), key);
        };
        std::optional<quant::FourBitWeight> four_bit = quant::read_saved_four_bit(
            name, saved, compute_dtype, keep_mapped_ ? at::Device(at::kCPU) : device_,
            ckpt_.contains(name) ? ckpt_.file_of(name).path() : ckpt_.dir());
        if (!four_bit) return {read(name, std::move(expected_shape)), nullptr};
        if (four_bit->state->shape != expected_shape)
            fail(ErrorKind::kConfig, ckpt_.file_of(name).path() + ": 4-bit tensor '" + name + "' has shape " +
                                         shape_text(four_bit->state->shape) + " but config.json implies " +
                                         shape_text(expected_shape));
        return {four_bit->packed, four_bit->state};
    }
    std::vector<std::string> unused() const {
        std::vector<std::string> out;
        for (const auto& n : ckpt_.names())
            if (!used_.count(n)) out.push_back(n);
        return out;
    }

private:
    const io::Checkpoint& ckpt_;
    at::ScalarType dtype_;
    at::Device device_;
    bool keep_mapped_;
    std::set<std::string> used_;
};

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
    w.embed_tokens = r.read("model.embed_tokens.weight", {config.vocab_size, H});
    for (int64_t i = 0; i < config.num_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        DecoderLayerWeights l;
        l.input_norm = r.read(p + "input_layernorm.weight", {H});
        auto linear = [&](const std::string& path, int64_t out, int64_t in, bool bias) {
            auto [weight, four_bit] = r.read_linear(p + path + ".weight", {out, in}, four_bit_compute);
            return Linear{weight, r.read_if(bias, p + path + ".bias", {out}), std::nullopt, four_bit};
        };
        l.q_proj = linear("self_attn.q_proj", q_out, H, config.qkv_bias);
        l.k_proj = linear("self_attn.k_proj", kv_out, H, config.qkv_bias);
        l.v_proj = linear("self_attn.v_proj", kv_out, H, config.qkv_bias);
        l.o_proj = linear("self_attn.o_proj", H, q_out, config.o_bias);
        l.post_attention_norm = r.read(p + "post_attention_layernorm.weight", {H});
        l.gate_proj = linear("mlp.gate_proj", I, H, config.mlp_bias);
        l.up_proj = linear("mlp.up_proj", I, H, config.mlp_bias);
        l.down_proj = linear("mlp.down_proj", H, I, config.mlp_bias);
        w.layers.push_back(std::move(l));
    }
    w.final_norm = r.read("model.norm.weight", {H});
    w.lm_head = config.tie_word_embeddings ? w.embed_tokens : r.read("lm_head.weight", {config.vocab_size, H});
    std::vector<std::string> unused = r.unused();
    return {CausalLM(std::move(config), std::move(w)), std::move(unused)};
}

}  // namespace ftl::model
