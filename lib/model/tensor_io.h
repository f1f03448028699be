// Between io's byte views and ATen tensors.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace ftl::model {

at::ScalarType scalar_type_of(io::DType dtype);
io::DType dtype_of(at::ScalarType type);  // throws for types safetensors cannot hold

// A CPU tensor that owns a copy of the view's bytes.
at::Tensor tensor_from_view(const io::TensorView& view);
// A read-only CPU tensor over the mmapped bytes of `name`, keeping `file` mapped while it lives
// (zero-copy; pages are read on first touch). Writing into it is undefined: it is for weights
// that stay frozen or are copied (to another dtype or device) before use.
at::Tensor mapped_tensor(const std::shared_ptr<const io::SafetensorsFile>& file, const std::string& name);

// A shape as error messages print it: [4096, 11008].
std::string shape_text(at::IntArrayRef shape);
// A view of a contiguous CPU tensor's bytes (valid while `tensor` lives).
io::TensorView view_of(const at::Tensor& tensor);

// Named tensors on any device, in any layout, as io::NamedTensor views for the safetensors writers:
// `views` point into `copies` (contiguous CPU tensors, detached), so keep the struct alive while writing.
struct CpuTensorViews {
    std::vector<at::Tensor> copies;
    std::vector<io::NamedTensor> views;
};
CpuTensorViews cpu_views(const std::vector<std::pair<std::string, at::Tensor>>& tensors);

// "bfloat16"/"bf16"/"float16"/"fp16"/"half"/"float32"/"fp32"/"float" -> ScalarType; throws naming
// `what` and the accepted names otherwise.
at::ScalarType parse_float_dtype(const std::string& name, const std::string& what);

}  // namespace ftl::model
