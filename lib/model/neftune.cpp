#include "model/neftune.h"

#include <cmath>

namespace ftl::model {

float neftune_magnitude(double alpha, int64_t row_length, int64_t hidden_size) {
    const float dims = static_cast<float>(row_length * hidden_size);
    return static_cast<float>(alpha) / std::sqrt(dims);
}

at::Tensor with_neftune_noise(const at::Tensor& embedded, double alpha, const std::optional<at::Generator>& generator) {
    const float magnitude = neftune_magnitude(alpha, embedded.size(1), embedded.size(2));
    at::Tensor noise = at::empty_like(embedded);
    noise.uniform_(-magnitude, magnitude, generator);
    return embedded + noise;
}

}  // namespace ftl::model
