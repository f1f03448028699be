#include "model/quantize.h"

#include <ATen/core/grad_mode.h>

namespace ftl::model {

at::ScalarType four_bit_source_dtype(const quant::FourBitConfig& config) {
    return at::isFloatingType(config.storage_dtype) ? config.storage_dtype : at::kFloat;
}

LinearQuantizer four_bit_linears(const quant::FourBitQuantizer& quantizer) {
    return [&quantizer](Linear& linear, const std::string& name) {
        quant::FourBitWeight q = quantizer.quantize(linear.weight.to(four_bit_source_dtype(quantizer.config())), name);
        linear.weight = q.packed;
        linear.four_bit = q.state;
    };
}

LinearQuantizer int8_linears(double threshold, const at::Device& device) {
    return [threshold, device](Linear& linear, const std::string&) {
        quant::Int8Weight q = quant::quantize_int8(linear.weight.to(at::kFloat), threshold, device);
        linear.weight = q.codes;
        linear.int8 = q.state;
    };
}

bool bitsandbytes_quantizes(const DecoderLayerWeights& layer, const Linear& linear) {
    return !layer.moe || (&linear != &layer.router && &linear != &layer.experts_gate_up && &linear != &layer.experts_down);
}

void quantize_layer_linears(DecoderLayerWeights& layer, int64_t index, const LinearQuantizer& quantize) {
    at::NoGradGuard no_grad;
    for (auto& [path, linear] : layer.linears()) {
        if (linear->four_bit || linear->int8 || !bitsandbytes_quantizes(layer, *linear)) continue;
        quantize(*linear, "model.layers." + std::to_string(index) + "." + path + ".weight");
    }
}

void quantize_model(CausalLM& model, const LinearQuantizer& quantize, at::ScalarType float_dtype, const at::Device& device,
                    std::optional<at::ScalarType> linear_dtype, std::optional<at::ScalarType> head_dtype) {
    at::NoGradGuard no_grad;
    DecoderWeights& w = model.weights();
    auto convert = [&](at::Tensor& t) {
        if (t.defined()) t = t.to(device, float_dtype).contiguous();
    };
    const bool tied = w.lm_head.is_same(w.embed_tokens);
    convert(w.embed_tokens);
    for (size_t i = 0; i < w.layers.size(); ++i) {
        DecoderLayerWeights& layer = w.layers[i];
        quantize_layer_linears(layer, static_cast<int64_t>(i), quantize);
        for (auto& [path, norm] : layer.norms()) convert(*norm);
        for (auto& [path, linear] : layer.linears()) {
            if (bitsandbytes_quantizes(layer, *linear)) {
                convert(linear->bias);
                continue;
            }
            // A MoE layer's router and experts, and their biases: the linears' type, as loaded unmapped.
            const at::ScalarType type = linear_dtype.value_or(float_dtype);
            linear->weight = linear->weight.to(device, type).contiguous();
            if (linear->bias.defined()) linear->bias = linear->bias.to(device, type).contiguous();
        }
    }
    convert(w.final_norm);
    if (tied) w.lm_head = w.embed_tokens;
    else w.lm_head = w.lm_head.to(device, head_dtype.value_or(float_dtype)).contiguous();
}

void QuantizedFootprint::add(DecoderLayerWeights& layer) {
    for (auto& [path, linear] : layer.linears()) {
        if (linear->four_bit) {
            quantized += linear->weight.nbytes() + linear->four_bit->bytes();
            bf16 += linear->four_bit->numel() * 2;
        } else if (linear->int8) {
            quantized += linear->weight.nbytes() + linear->int8->scales.nbytes();
            bf16 += linear->weight.numel() * 2;
        }
    }
}

bool has_quantized_linears(CausalLM& model) {
    for (DecoderLayerWeights& layer : model.weights().layers)
        for (auto& [path, linear] : layer.linears())
            if (linear->four_bit || linear->int8) return true;
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
