#include "model/tensor_io.h"

#include <cstring>
#include <sstream>

#include "util/error.h"

namespace ftl::model {

at::ScalarType scalar_type_of(io::DType dtype) {
    switch (dtype) {
        case io::DType::kBool: return at::kBool;
        case io::DType::kU8: return at::kByte;
        case io::DType::kI8: return at::kChar;
        case io::DType::kI16: return at::kShort;
        case io::DType::kI32: return at::kInt;
        case io::DType::kI64: return at::kLong;
        case io::DType::kF16: return at::kHalf;
        case io::DType::kBF16: return at::kBFloat16;
        case io::DType::kF32: return at::kFloat;
        case io::DType::kF64: return at::kDouble;
    }
    fail(ErrorKind::kInternal, "unknown io::DType");
}

io::DType dtype_of(at::ScalarType type) {
    for (io::DType d : {io::DType::kBool, io::DType::kU8, io::DType::kI8, io::DType::kI16, io::DType::kI32,
                        io::DType::kI64, io::DType::kF16, io::DType::kBF16, io::DType::kF32, io::DType::kF64})
        if (scalar_type_of(d) == type) return d;
    fail(ErrorKind::kInternal, std::string("safetensors cannot hold dtype ") + c10::toString(type));
}

at::Tensor tensor_from_view(const io::TensorView& view) {
    at::Tensor out = at::empty(view.shape, at::TensorOptions().dtype(scalar_type_of(view.dtype)));
    if (view.nbytes) std::memcpy(out.data_ptr(), view.data, view.nbytes);
    return out;
}

at::Tensor mapped_tensor(const std::shared_ptr<const io::SafetensorsFile>& file, const std::string& name) {
    const io::TensorView view = file->tensor(name);
    auto keep_mapped = [file](void*) {};
    return at::from_blob(const_cast<std::byte*>(view.data), view.shape, keep_mapped,
                         at::TensorOptions().dtype(scalar_type_of(view.dtype)));
}

io::TensorView view_of(const at::Tensor& tensor) {
    if (!tensor.is_contiguous() || !tensor.device().is_cpu())
        fail(ErrorKind::kInternal, "view_of needs a contiguous CPU tensor");
    return {dtype_of(tensor.scalar_type()), tensor.sizes().vec(),
            static_cast<const std::byte*>(tensor.data_ptr()), tensor.nbytes()};
}

CpuTensorViews cpu_views(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    CpuTensorViews out;
    out.copies.reserve(tensors.size());
    for (const auto& [name, t] : tensors) {
        out.copies.push_back(t.detach().to(at::kCPU).contiguous());
        out.views.push_back({name, view_of(out.copies.back())});
    }
    return out;
}

at::ScalarType parse_float_dtype(const std::string& name, const std::string& what) {
    if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
    if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
    if (name == "float32" || name == "fp32" || name == "float") return at::kFloat;
    fail(ErrorKind::kConfig, what + ": unsupported dtype '" + name +
                                 "' (use bfloat16, float16 or float32)");
}

std::string shape_text(at::IntArrayRef shape) {
    std::ostringstream s;
    s << shape;
    return s.str();
}

}  // namespace ftl::model
