#include "model/weight_reader.h"

#include "model/tensor_io.h"
#include "quant/mxfp4.h"
#include "util/error.h"

namespace ftl::model {

at::Tensor WeightReader::read(const std::string& name, std::vector<int64_t> expected_shape,
                              std::optional<at::ScalarType> dtype) {
    if (!ckpt_.contains(name))
        fail(ErrorKind::kConfig, ckpt_.dir() + ": the checkpoint has no tensor '" + name +
                                     "' that config.json implies (wrong config or "
                                     "truncated checkpoint?)");
    const io::TensorView view = ckpt_.tensor(name);
    if (view.shape != expected_shape)
        fail(ErrorKind::kConfig, ckpt_.file_of(name).path() + ": tensor '" + name + "' has shape " +
                                     shape_text(view.shape) + " but config.json implies " + shape_text(expected_shape));
    if (view.dtype == io::DType::kBool || view.dtype == io::DType::kU8 || view.dtype == io::DType::kI8 ||
        view.dtype == io::DType::kI16 || view.dtype == io::DType::kI32 || view.dtype == io::DType::kI64)
        fail(ErrorKind::kConfig, ckpt_.file_of(name).path() + ": tensor '" + name + "' has dtype " +
                                     io::dtype_name(view.dtype) + " (floating point expected)");
    used_.insert(name);
    at::Tensor mapped = mapped_tensor(ckpt_.shared_file_of(name), name);
    if (keep_mapped_) return mapped;
    // One pass from the mapped bytes to the target dtype and device.
    return mapped.to(device_, dtype.value_or(dtype_), /*non_blocking=*/false, /*copy=*/true);
}

at::Tensor WeightReader::read_if(bool present, const std::string& name, std::vector<int64_t> shape,
                                 std::optional<at::ScalarType> dtype) {
    return present ? read(name, std::move(shape), dtype) : at::Tensor();
}

WeightReader::LinearWeight WeightReader::read_linear(const std::string& name, std::vector<int64_t> expected_shape,
                                                    at::ScalarType compute_dtype, std::optional<at::ScalarType> float_dtype,
                                                    std::optional<double> int8_threshold) {
    auto saved = [&](const std::string& key) -> at::Tensor {
        if (!ckpt_.contains(key)) return {};
        used_.insert(key);
        return mapped_tensor(ckpt_.shared_file_of(key), key);
    };
    const std::string source = ckpt_.contains(name) ? ckpt_.file_of(name).path() : ckpt_.dir();
    const at::Device device = keep_mapped_ ? at::Device(at::kCPU) : device_;
    if (int8_threshold && ckpt_.contains(name) && ckpt_.tensor(name).dtype == io::DType::kI8) {
        const std::optional<quant::Int8Weight> int8 = quant::read_saved_int8(name, saved, *int8_threshold, device, source);
        if (int8->codes.sizes().vec() != expected_shape)
            fail(ErrorKind::kConfig, source + ": 8-bit tensor '" + name + "' has shape " + shape_text(int8->codes.sizes()) +
                                         " but config.json implies " + shape_text(expected_shape));
        return {int8->codes, nullptr, int8->state};
    }
    std::optional<quant::FourBitWeight> four_bit = quant::read_saved_four_bit(name, saved, compute_dtype, device, source);
    if (!four_bit) return {read(name, std::move(expected_shape), float_dtype), nullptr, nullptr};
    if (four_bit->state->shape != expected_shape)
        fail(ErrorKind::kConfig, ckpt_.file_of(name).path() + ": 4-bit tensor '" + name + "' has shape " +
                                     shape_text(four_bit->state->shape) + " but config.json implies " +
                                     shape_text(expected_shape));
    return {four_bit->packed, four_bit->state, nullptr};
}

at::Tensor WeightReader::read_mxfp4(const std::string& name, std::vector<int64_t> expected_shape,
                                    std::optional<at::ScalarType> dtype) {
    const std::string blocks_name = name + "_blocks", scales_name = name + "_scales";
    for (const std::string& key : {blocks_name, scales_name})
        if (!ckpt_.contains(key))
            fail(ErrorKind::kConfig, ckpt_.dir() + ": the checkpoint has no tensor '" + key + "' (an MXFP4 '" + name +
                                         "' needs _blocks and _scales)");
    std::vector<int64_t> blocks_shape = expected_shape;
    if (blocks_shape.back() % 32 != 0)
        fail(ErrorKind::kConfig, ckpt_.file_of(blocks_name).path() + ": '" + name + "' has " +
                                     std::to_string(blocks_shape.back()) + " columns, not a multiple of MXFP4's 32-value blocks");
    blocks_shape.back() /= 32;
    const std::vector<int64_t> scales_shape = blocks_shape;
    blocks_shape.push_back(16);
    for (const auto& [key, shape] : {std::pair{blocks_name, blocks_shape}, std::pair{scales_name, scales_shape}})
        if (ckpt_.tensor(key).shape != shape)
            fail(ErrorKind::kConfig, ckpt_.file_of(key).path() + ": tensor '" + key + "' has shape " +
                                         shape_text(ckpt_.tensor(key).shape) + " but config.json implies " + shape_text(shape));
    used_.insert(blocks_name);
    used_.insert(scales_name);
    const at::Device device = keep_mapped_ ? at::Device(at::kCPU) : device_;
    const at::Tensor blocks = mapped_tensor(ckpt_.shared_file_of(blocks_name), blocks_name).to(device);
    const at::Tensor scales = mapped_tensor(ckpt_.shared_file_of(scales_name), scales_name).to(device);
    return quant::dequantize_mxfp4(blocks, scales, dtype.value_or(dtype_), ckpt_.file_of(blocks_name).path() + ": " + name);
}

std::vector<std::string> WeightReader::unused() const {
    std::vector<std::string> out;
    for (const auto& n : ckpt_.names())
        if (!used_.count(n)) out.push_back(n);
    return out;
}

}  // namespace ftl::model
