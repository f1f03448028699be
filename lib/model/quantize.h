// QLoRA's base model (transformers + bitsandbytes: replace_with_bnb_linear with load_in_4bit or
// load_in_8bit): every linear of the decoder layers becomes 4-bit or 8-bit; embeddings, norms,
// biases and lm_head stay in floating point, and so do a MoE layer's router and experts (transformers
// 5 holds them as parameters of their own modules, not nn.Linear, which is all bitsandbytes replaces). See quant/four_bit.h and quant/int8.h for the formats.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "model/decoder.h"
#include "quant/four_bit.h"

namespace ftl::model {

// The dtype weights are quantised from, which dequantisation gives back: the seed's train.py
// loads the model with torch_dtype = the quant storage dtype when that is a float type, else
// float32.
at::ScalarType four_bit_source_dtype(const quant::FourBitConfig& config);

// Turns one floating-point linear (its weight possibly a view of a mapped file, read once) into a
// frozen quantised one; `name` is the weight's checkpoint name, for messages.
using LinearQuantizer = std::function<void(Linear& linear, const std::string& name)>;

// 4-bit (--use_4bit_quantization): packed codes and state on the quantizer's device.
LinearQuantizer four_bit_linears(const quant::FourBitQuantizer& quantizer);
// LLM.int8 (--use_8bit_quantization, BitsAndBytesConfig(load_in_8bit=True)): the weight in
// float32 (train.py loads 8-bit models with torch_dtype float32) quantised row-wise on `device`.
LinearQuantizer int8_linears(double threshold, const at::Device& device);

// Whether bitsandbytes quantises `linear` of `layer`: every linear but a MoE layer's router and
// experts' stacks.
bool bitsandbytes_quantizes(const DecoderLayerWeights& layer, const Linear& linear);

// Quantises the linears of decoder layer `index` in place (those already quantised, from a
// bitsandbytes checkpoint, stay as they are).
void quantize_layer_linears(DecoderLayerWeights& layer, int64_t index, const LinearQuantizer& quantize);

// Every decoder layer's linears quantised, one layer at a time, and every other tensor (still
// mapped, or not) to `float_dtype` on `device` (a MoE layer's router and experts to `linear_dtype`,
// an untied lm_head to `head_dtype`, when given): the base model never exists whole in floating point.
void quantize_model(CausalLM& model, const LinearQuantizer& quantize, at::ScalarType float_dtype, const at::Device& device,
                    std::optional<at::ScalarType> linear_dtype = std::nullopt,
                    std::optional<at::ScalarType> head_dtype = std::nullopt);

// Bytes of a model's quantised linears, added up layer by layer as they are quantised: codes with
// their quantisation state, and the same weights in bfloat16 (QLoRA's claim for 4-bit: ~0.27x;
// 8-bit: ~0.5x).
struct QuantizedFootprint {
    int64_t quantized = 0;
    int64_t bf16 = 0;
    void add(DecoderLayerWeights& layer);
};

// Whether any linear is 4-bit or 8-bit (a bitsandbytes checkpoint loads that way).
bool has_quantized_linears(CausalLM& model);

// Parameters of the model counting each 4-bit weight by its unpacked element count (as PEFT's
// print_trainable_parameters counts Params4bit), adapters excluded.
int64_t base_parameter_count(CausalLM& model);

}  // namespace ftl::model
