// Writing safetensors files the HF tools load: one file, or shards with
// `model.safetensors.index.json` ({"metadata": {"total_size": bytes}, "weight_map": {name: file}})
// named `model-00001-of-00003.safetensors` as transformers' save_pretrained names them.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace ftl::io {

struct NamedTensor {
    std::string name;
    TensorView view;  // bytes are copied into the file; the view need only live during the call
};

// Writes one file atomically. Tensors are laid out in the order given; names must be unique.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Splits `tensors` (in order) into shards of at most `max_shard_bytes` each (a tensor larger than
// that gets a shard of its own), writes them into `dir` with the index file, and returns the shard
// file names. With a single shard it writes `<stem>.safetensors` and no index, as transformers does.
std::vector<std::string> write_sharded_safetensors(const std::string& dir,
                                                   const std::vector<NamedTensor>& tensors,
                                                   size_t max_shard_bytes,
                                                   const std::string& stem = "model",
                                                   const std::map<std::string, std::string>& metadata = {});

// A tensor to be written, known before its bytes exist.
struct TensorSpec {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    size_t nbytes() const;
};
// The bytes of tensor `index` of the specs, asked for once, in order, while its shard is written;
// the view must stay valid until the next call (or the end of the write).
using TensorSource = std::function<TensorView(size_t index)>;

// write_sharded_safetensors for tensors made one at a time (a merge, a consolidation): the shard
// plan comes from the specs, and at most one produced tensor is alive at once. The source's
// views must match their specs' dtype and shape (ftl::Error kInternal otherwise).
std::vector<std::string> write_sharded_safetensors(const std::string& dir, const std::vector<TensorSpec>& specs,
                                                   const TensorSource& source, size_t max_shard_bytes,
                                                   const std::string& stem = "model",
                                                   const std::map<std::string, std::string>& metadata = {});

}  // namespace ftl::io
