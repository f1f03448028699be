#include "model/kernel_launch.h"

#include <c10/cuda/CUDAStream.h>

#include "util/error.h"

namespace ftl::model::cuda {

std::optional<ElementType> element_type_of(at::ScalarType type) {
    switch (type) {
        case at::kFloat: return ElementType::kFloat32;
        case at::kBFloat16: return ElementType::kBFloat16;
        case at::kHalf: return ElementType::kFloat16;
        default: return std::nullopt;
    }
}

void* current_stream(const at::Tensor& on_device) {
    return c10::cuda::getCurrentCUDAStream(on_device.device().index()).stream();
}

void check_launch(int status, const std::string& kernel) {
    if (status != 0)
        fail(ErrorKind::kInternal, kernel + " kernel failed to launch (CUDA error " + std::to_string(status) + ")");
}

}  // namespace ftl::model::cuda
