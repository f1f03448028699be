// Writing a model folder transformers loads (save_pretrained's layout): the weights as
// model.safetensors or shards + model.safetensors.index.json, and config.json.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ftl::model {

// The config.json dtype name of a floating type: "float32", "bfloat16", "float16".
std::string config_dtype_name(at::ScalarType type);

// Writes out_dir/config.json: the base folder's config.json with vocab_size (when given; resized
// embeddings) and the dtype key ("torch_dtype" where the base has it, else "dtype") replaced, and
// with `floating_point_weights` its quantization_config removed (the weights written are not the
// base's quantised ones: gpt-oss's MXFP4 experts dequantised). Throws ftl::Error naming the file
// when the base has no readable config.json.
void write_model_config(const std::string& base_model_dir, const std::string& out_dir,
                        std::optional<int64_t> vocab_size, std::optional<at::ScalarType> dtype,
                        bool floating_point_weights = false);

// Writes `weights` (HF names, any device, floating point) converted to `dtype` as sharded
// safetensors (at most `max_shard_bytes` per file) and config.json from the base model's, into
// `out_dir`.
void save_model_folder(const std::string& out_dir, const std::vector<std::pair<std::string, at::Tensor>>& weights,
                       const std::string& base_model_dir, int64_t vocab_size, at::ScalarType dtype,
                       size_t max_shard_bytes = 5'000'000'000);

}  // namespace ftl::model
