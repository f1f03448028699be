#include "io/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::io {
namespace fs = std::filesystem;

Checkpoint Checkpoint::open(const std::string& dir, const std::string& stem) {
    Checkpoint ckpt;
    ckpt.dir_ = dir;
    const fs::path index_path = fs::path(dir) / (stem + ".safetensors.index.json");
    const fs::path single_path = fs::path(dir) / (stem + ".safetensors");
    if (fs::exists(index_path)) {
        std::ifstream in(index_path);
        nlohmann::json index = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
        if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
            !index["weight_map"].is_object())
            fail(ErrorKind::kIo, index_path.string() +
                                     ": not a valid index: expected a JSON object with a 'weight_map' object");
        for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
            if (!it->is_string())
                fail(ErrorKind::kIo, index_path.string() + ": weight_map['" + it.key() + "'] is not a file name");
            const std::string shard = it->get<std::string>();
            if (shard.find('/') != std::string::npos || shard == "..")
                fail(ErrorKind::kIo, index_path.string() + ": weight_map['" + it.key() +
                                         "'] = '" + shard + "' is not a file in the folder");
            if (!fs::exists(fs::path(dir) / shard))
                fail(ErrorKind::kIo, index_path.string() + ": shard '" + shard + "' (holding '" +
                                         it.key() + "') is missing from " + dir +
                                         " (incomplete download?)");
            ckpt.shard_of_[it.key()] = shard;
        }
        return ckpt;
    }
    if (fs::exists(single_path)) {
        auto file = SafetensorsFile::open(single_path.string());
        for (const auto& t : file->header().tensors) ckpt.shard_of_[t.name] = single_path.filename();
        ckpt.open_files_[single_path.filename()] = file;
        return ckpt;
    }
    if (!fs::is_directory(dir)) fail(ErrorKind::kIo, dir + ": no such folder");
    std::string found;
    for (const char* legacy : {"pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin"})
        if (fs::exists(fs::path(dir) / legacy)) found = legacy;
    fail(ErrorKind::kIo,
         dir + ": no " + stem + ".safetensors or " + stem + ".safetensors.index.json" +
             (found.empty() ? std::string(" in the folder")
                            : "; it holds " + found +
                                  " (pickle weights are not read: convert them with "
                                  "transformers' save_pretrained(safe_serialization=True))"));
}

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    for (const auto& [name, shard] : shard_of_) out.push_back(name);
    return out;
}

std::shared_ptr<const SafetensorsFile> Checkpoint::shared_file_of(const std::string& name) const {
    auto it = shard_of_.find(name);
    if (it == shard_of_.end())
        fail(ErrorKind::kIo, dir_ + ": the checkpoint has no tensor '" + name + "'" +
                                 did_you_mean(name, names()));
    auto& file = open_files_[it->second];
    if (!file) file = SafetensorsFile::open((fs::path(dir_) / it->second).string());
    if (!file->contains(name))
        fail(ErrorKind::kIo, file->path() + ": the index says it holds '" + name + "' but it does not");
    return file;
}

TensorView Checkpoint::tensor(const std::string& name) const { return file_of(name).tensor(name); }

}  // namespace ftl::io
