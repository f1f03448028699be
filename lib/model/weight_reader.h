// Reads a model's weights from a checkpoint folder by their HF names, each
// checked against the shape config.json implies: a missing tensor, a wrong
// shape or a non-float dtype is ftl::Error(kConfig) naming the tensor, the file
// and both shapes. Remembers what it read, so the rest can be reported unused.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "quant/four_bit.h"
#include "quant/int8.h"

namespace ftl::model {

class WeightReader {
public:
    // `keep_mapped`: return zero-copy views of the mapped file (dtype and device
    // ignored).
    WeightReader(const io::Checkpoint& ckpt, at::ScalarType dtype, at::Device device, bool keep_mapped)
        : ckpt_(ckpt), dtype_(dtype), device_(device), keep_mapped_(keep_mapped) {}

    // The tensor `name` on the target device, in `dtype` when given, else the target dtype.
    at::Tensor read(const std::string& name, std::vector<int64_t> expected_shape,
                    std::optional<at::ScalarType> dtype = std::nullopt);
    // read() when `present`, else an undefined tensor.
    at::Tensor read_if(bool present, const std::string& name, std::vector<int64_t> shape,
                       std::optional<at::ScalarType> dtype = std::nullopt);
    // A linear's weight: floating point (in `float_dtype` when given), or (a bitsandbytes 4-bit
    // checkpoint) packed codes with their state, kept in their storage dtype on the device (or
    // mapped), or (an 8-bit checkpoint: `int8_threshold` given) int8 codes with their row scales.
    struct LinearWeight {
        at::Tensor weight;
        std::shared_ptr<const quant::FourBitState> four_bit;
        std::shared_ptr<const quant::Int8State> int8;
    };
    LinearWeight read_linear(const std::string& name, std::vector<int64_t> expected_shape, at::ScalarType compute_dtype,
                             std::optional<at::ScalarType> float_dtype = std::nullopt,
                             std::optional<double> int8_threshold = std::nullopt);
    // An MXFP4 tensor (the hub's gpt-oss experts: `name`_blocks and `name`_scales, quant/mxfp4.h)
    // dequantised to `dtype` (else the target dtype), on the target device (the host when
    // keep_mapped); `expected_shape` is the dequantised [..., rows, columns].
    at::Tensor read_mxfp4(const std::string& name, std::vector<int64_t> expected_shape,
                          std::optional<at::ScalarType> dtype = std::nullopt);
    bool contains(const std::string& name) const { return ckpt_.contains(name); }
    std::vector<std::string> unused() const;  // tensors of the checkpoint not read

private:
    const io::Checkpoint& ckpt_;
    at::ScalarType dtype_;
    at::Device device_;
    bool keep_mapped_;
    std::set<std::string> used_;
};

}  // namespace ftl::model
