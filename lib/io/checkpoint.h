// A checkpoint folder as transformers/peft write it: `<stem>.safetensors`, or shards listed in
// `<stem>.safetensors.index.json`. Shards are opened (mmapped) on first use, so a rank that needs
// a few tensors touches only the files that hold them.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace ftl::io {

class Checkpoint {
public:
    // Opens `dir` with weights named `<stem>.safetensors[.index.json]` ("model" for models,
    // "adapter_model" for PEFT adapters). Throws ftl::Error(kIo) naming the folder and what it
    // holds instead (e.g. only pytorch_model.bin) when there are no safetensors weights, and naming
    // the shard when the index lists a file that is missing.
    static Checkpoint open(const std::string& dir, const std::string& stem = "model");

    const std::string& dir() const { return dir_; }
    std::vector<std::string> names() const;  // every tensor, sorted
    bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }
    // The tensor's bytes (mmapped); throws naming the folder and the closest name when absent.
    TensorView tensor(const std::string& name) const;
    // The file that holds `name` (opened on demand); shared so that zero-copy tensors can keep
    // it mapped.
    const SafetensorsFile& file_of(const std::string& name) const { return *shared_file_of(name); }
    std::shared_ptr<const SafetensorsFile> shared_file_of(const std::string& name) const;

private:
    std::string dir_;
    std::map<std::string, std::string> shard_of_;  // tensor -> shard file name
    mutable std::map<std::string, std::shared_ptr<SafetensorsFile>> open_files_;
};

}  // namespace ftl::io
