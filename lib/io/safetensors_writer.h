// Writing safetensors files the HF tools load: one file, or shards with
// `model.safetensors.index.json` ({"metadata": {"total_size": bytes}, "weight_map": {name: file}})
// named `model-00001-of-00003.safetensors` as transformers' save_pretrained names them.
#pragma once

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

}  // namespace ftl::io
