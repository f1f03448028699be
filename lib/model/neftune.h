// NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"), as
// transformers' neftune_post_forward_hook adds it in training (--neftune_noise_alpha): uniform
// noise in [-m, m] on the input embeddings [B, T, H], m = alpha / sqrt(T * H), where T is the
// batch's row length. m is rounded through float32 as torch computes it (sqrt of the int64
// T * H as a float32 tensor, alpha divided by it in float32); the noise is drawn in the
// embeddings' type from `generator` (the run's dropout generator, saved with checkpoints).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace ftl::model {

float neftune_magnitude(double alpha, int64_t row_length, int64_t hidden_size);

at::Tensor with_neftune_noise(const at::Tensor& embedded, double alpha, const std::optional<at::Generator>& generator);

}  // namespace ftl::model
