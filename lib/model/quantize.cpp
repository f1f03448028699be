#include "model/quantize.h"

#include <ATen/core/grad_mode.h>

namespace ftl::model {

at::ScalarType four_bit_source_dtype(const quant::FourBitConfig& config) {
    return at::isFloatingType(config.storage_dtype) ? config.storage_dtype : at::kFloat;
}

void quantize_layer_linears(DecoderLayerWeights& layer, int64_t index, const quant::FourBitQuantizer& quantizer) {
    at::NoGradGuard no_grad;
    const at::ScalarType source = four_bit_source_dtype(quantizer.config());
    for (auto& [path, linear] : layer.linears()) {
        if (linear->four_bit) continue;
        const std::string name = "model.layers." + std::to_string(index) + "." + path + ".weight";
        quant::FourBitWeight q = quantizer.quantize(linear->weight.to(source), name);
        linear->weight = q.packed;
        linear->four_bit = q.state;
    }
}

void quantize_model(CausalLM& model, const quant::FourBitQuantizer& quantizer, at::ScalarType float_dtype,
                    const at::Device& device, std::optional<at::ScalarType> head_dtype) {
    at::NoGradGuard no_grad;
    DecoderWeights& w = model.weights();
    auto convert = [&](at::Tensor& t) {
        if (t.defined()) t = t.to(device, float_dtype).contiguous();
    };
    const bool tied = w.lm_head.is_same(w.embed_tokens);
    convert(w.embed_tokens);
    for (size_t i = 0; i < w.layers.size(); ++i) {
        DecoderLayerWeights& layer = w.layers[i];
        quantize_layer_linears(layer, static_cast<int64_t>(i), quantizer);
        for (auto& [path, norm] : layer.norms()) convert(*norm);
        for (auto& [path, linear] : layer.linears()) convert(linear->bias);
    }
    convert(w.final_norm);
    if (tied) w.lm_head = w.embed_tokens;
    else w.lm_head = w.lm_head.to(device, head_dtype.value_or(float_dtype)).contiguous();
}

void FourBitFootprint::add(DecoderLayerWeights& layer) {
    for (auto& [path, linear] : layer.linears()) {
        if (!linear->four_bit) continue;
        quantized += linear->weight.nbytes() + linear->four_bit->bytes();
        bf16 += linear->four_bit->numel() * 2;
    }
}

bool has_four_bit_linears(CausalLM& model) {
    for (DecoderLayerWeights& layer : model.weights().layers)
        for (auto& [path, linear] : layer.linears())
            if (linear->four_bit) return true;
    return false;
}

int64_t base_parameter_count(CausalLM& model) {
    int64_t count = 0;
    for (auto& [name, t] : model.named_weights()) count += t.numel();
    for (DecoderLayerWeights& layer : model.weights().layers)
        for (auto& [path, linear] : layer.linears())
            if (linear->four_bit && linear->weight.defined())
                count += linear->four_bit->numel() - linear->weight.numel();
    return count;
}

}  // namespace ftl::model
