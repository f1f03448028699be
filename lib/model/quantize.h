// QLoRA's base model (transformers + bitsandbytes: replace_with_bnb_linear with load_in_4bit):
// every linear of the decoder layers becomes 4-bit; embeddings, norms, biases and lm_head stay in
// floating point. See quant/four_bit.h for the format.
#pragma once

#include <optional>

#include <ATen/ATen.h>

#include "model/decoder.h"
#include "quant/four_bit.h"

namespace ftl::model {

// The dtype weights are quantised from, which dequantisation gives back: the seed's train.py
// loads the model with torch_dtype = the quant storage dtype when that is a float type, else
// float32.
at::ScalarType four_bit_source_dtype(const quant::FourBitConfig& config);

// Quantises the seven linears of decoder layer `index` in place (weights may be views of mapped
// files; each is read once); the packed weights and their state land on the quantizer's device.
void quantize_layer_linears(DecoderLayerWeights& layer, int64_t index, const quant::FourBitQuantizer& quantizer);

// Every decoder layer's linears to 4-bit, one layer at a time, and every other tensor (still
// mapped, or not) to `float_dtype` on `device` (an untied lm_head to `head_dtype` when given):
// the base model never exists whole in floating point.
void quantize_model(CausalLM& model, const quant::FourBitQuantizer& quantizer, at::ScalarType float_dtype,
                    const at::Device& device, std::optional<at::ScalarType> head_dtype = std::nullopt);

// Bytes of a model's 4-bit linears, added up layer by layer as they are quantised: packed codes
// with their quantisation state, and the same weights in bfloat16 (QLoRA's claim: ~0.27x).
struct FourBitFootprint {
    int64_t quantized = 0;
    int64_t bf16 = 0;
    void add(DecoderLayerWeights& layer);
};

// Whether any linear is 4-bit (a bitsandbytes checkpoint loads that way).
bool has_four_bit_linears(CausalLM& model);

// Parameters of the model counting each 4-bit weight by its unpacked element count (as PEFT's
// print_trainable_parameters counts Params4bit), adapters excluded.
int64_t base_parameter_count(CausalLM& model);

}  // namespace ftl::model
