// 4-bit weights as bitsandbytes stores and computes them (Linear4bit / Params4bit / QuantState),
// for QLoRA (Dettmers et al. 2023): frozen base weights quantised blockwise to NF4 or FP4 codes,
// optionally with the absmax values themselves quantised to 8 bits ("double quantisation",
// --use_nested_quant), dequantised to the compute dtype when a layer runs.
//
// Layout of one weight W [out, in] with n = out * in elements and `blocksize` (64):
//   packed        [(n + 1) / 2 / s, 1] in the storage dtype (s bytes per element): two codes per
//                 byte, element 2i in the high nibble; uint8 storage is the bytes themselves,
//                 bfloat16/float16/float32 storage reinterprets them (so ZeRO-3 can shard them
//                 with the 16-bit parameters: the reason --bnb_4bit_quant_storage_dtype exists).
//   absmax        [ceil(n / blocksize)] fp32, or uint8 codes when nested;
//   nested_absmax [ceil(blocks / 256)] fp32, nested_code [256] fp32, offset: the nested state
//                 (block scale = nested_code[absmax[b]] * nested_absmax[b / 256] + offset).
// Dequantised: W[j] = code_table[code_j] * scale[j / blocksize] in fp32, then cast to `dtype`.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "quant/codes.h"

namespace ftl::quant {

// What --use_4bit_quantization and the --bnb_4bit_* flags choose (transformers' BitsAndBytesConfig).
struct FourBitConfig {
    QuantType type = QuantType::kNf4;           // --bnb_4bit_quant_type
    int64_t blocksize = 64;
    bool nested = false;                        // --use_nested_quant (bnb_4bit_use_double_quant)
    at::ScalarType compute_dtype = at::kFloat;  // --bnb_4bit_compute_dtype
    at::ScalarType storage_dtype = at::kByte;   // --bnb_4bit_quant_storage_dtype
};

// "uint8" | "bfloat16" | "float16" | "float32" -> dtype; anything else is Error(kUsage) naming `key`.
at::ScalarType parse_storage_dtype(const std::string& text, const std::string& key);

// bitsandbytes' QuantState of one weight. The tensors live on the packed weight's device.
struct FourBitState {
    QuantType type = QuantType::kNf4;
    int64_t blocksize = 64;
    std::vector<int64_t> shape;                 // the weight's shape, [out, in] for a linear
    at::ScalarType dtype = at::kFloat;          // what dequantisation yields (the weight's dtype when quantised)
    at::ScalarType compute_dtype = at::kFloat;  // the matmul's dtype (Linear4bit.compute_dtype; not saved)
    at::Tensor absmax;                          // [blocks] fp32, or uint8 when nested
    at::Tensor nested_absmax;                   // [ceil(blocks / 256)] fp32; undefined unless nested
    at::Tensor nested_code;                     // [256] fp32; undefined unless nested
    float offset = 0.0f;                        // nested only
    bool nested() const { return nested_absmax.defined(); }
    int64_t numel() const;
    int64_t bytes() const;  // absmax and nested absmax (not the packed codes, nor the shared nested code map)
};

struct FourBitWeight {
    at::Tensor packed;
    std::shared_ptr<const FourBitState> state;
};

// Quantises weights as bitsandbytes' quantize_4bit(weight, blocksize, compress_statistics=nested,
// quant_type, quant_storage) does on the CPU, bit for bit. The nested code map and its search
// table are built once; every weight's state shares the one map tensor (bitsandbytes keeps a copy
// per weight).
class FourBitQuantizer {
public:
    FourBitQuantizer(const FourBitConfig& config, const at::Device& device);
    const FourBitConfig& config() const { return config_; }

    // `weight`: any float dtype, any device; the state's dtype is weight's dtype, and packed codes
    // and state land on the quantizer's device. `name` is for errors: a byte count the storage
    // dtype does not divide is Error(kConfig).
    FourBitWeight quantize(const at::Tensor& weight, const std::string& name) const;

private:
    FourBitConfig config_;
    at::Device device_;
    at::Tensor nested_code_;                // [256] on the device (nested only)
    std::vector<uint8_t> nested_search_;  // bin -> code (nested only)
};

// The per-block scales [blocks] fp32 (undoing the nested quantisation).
at::Tensor block_absmax(const FourBitState& state);
// The weight in state.shape and state.dtype, on the packed tensor's device.
at::Tensor dequantize_4bit(const at::Tensor& packed, const FourBitState& state);

// y = x W^T + bias for a 4-bit W, as bitsandbytes' Linear4bit.forward: x and bias cast to the
// compute dtype, W dequantised (to state.dtype, then the compute dtype), the result cast back to
// x's dtype. x [..., in] -> [..., out]. The backward gives x's gradient only (W and bias are
// frozen) and dequantises W again, so no weight-sized tensor is kept for it.
at::Tensor linear_4bit(const at::Tensor& x, const at::Tensor& packed, const std::shared_ptr<const FourBitState>& state,
                       const at::Tensor& bias);

// A 4-bit weight as transformers + bitsandbytes save it (Linear4bit._save_to_state_dict):
// `name` holds the packed codes in the storage dtype, beside name.absmax, name.quant_map,
// name.nested_absmax and name.nested_quant_map (nested only) and
// name.quant_state.bitsandbytes__nf4|fp4 (uint8 bytes of a JSON object: quant_type, blocksize,
// dtype, shape, nested_blocksize, nested_offset). `tensor(key)` returns a saved tensor, undefined
// when absent. nullopt when `name` has no quant_state entry (a floating-point weight). A quant
// map other than bitsandbytes' table, a nested blocksize other than 256 or sizes that do not
// fit the shape are Error(kConfig) naming `source` and the tensor.
std::optional<FourBitWeight> read_saved_four_bit(const std::string& name,
                                                 const std::function<at::Tensor(const std::string&)>& tensor,
                                                 at::ScalarType compute_dtype, const at::Device& device,
                                                 const std::string& source);

}  // namespace ftl::quant
