// LibTorch's side of launching the model's CUDA kernels (CUDA builds only): the kernel element
// type of a tensor, the stream to launch on, and the error a failed launch raises.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "model/kernel_element.h"

namespace ftl::model::cuda {

// fp32, bf16 or fp16 -> the kernels' element type; nullopt for any other type.
std::optional<ElementType> element_type_of(at::ScalarType type);

// The current CUDA stream of the tensor's device, as the launchers take it.
void* current_stream(const at::Tensor& on_device);

// Throws an internal error naming `kernel` when a launcher returned a CUDA error (non-zero).
void check_launch(int status, const std::string& kernel);

}  // namespace ftl::model::cuda
