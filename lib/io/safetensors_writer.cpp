#include "io/safetensors_writer.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ftl::io {

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::set<std::string> seen;
    uint64_t offset = 0;
    for (const auto& t : tensors) {
        if (!seen.insert(t.name).second)
            fail(ErrorKind::kInternal, path + ": tensor '" + t.name + "' written twice");
        if (static_cast<size_t>(t.view.numel()) * dtype_size(t.view.dtype) != t.view.nbytes)
            fail(ErrorKind::kInternal, path + ": tensor '" + t.name + "' byte size does not match its shape");
        header[t.name] = {{"dtype", dtype_name(t.view.dtype)},
                          {"shape", t.view.shape},
                          {"data_offsets", {offset, offset + t.view.nbytes}}};
        offset += t.view.nbytes;
    }
    std::string text = header.dump();
    // Pad with spaces so the data buffer starts 8-byte aligned, as the reference writer does.
    while ((8 + text.size()) % 8 != 0) text.push_back(' ');
    write_file_atomically(path, [&](std::ostream& out) {
        uint64_t n = text.size();
        char len[8];
        for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
        out.write(len, 8);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        for (const auto& t : tensors)
            out.write(reinterpret_cast<const char*>(t.view.data),
                      static_cast<std::streamsize>(t.view.nbytes));
    });
}

std::vector<std::string> write_sharded_safetensors(const std::string& dir,
                                                   const std::vector<NamedTensor>& tensors,
                                                   size_t max_shard_bytes, const std::string& stem,
                                                   const std::map<std::string, std::string>& metadata) {
    std::vector<std::vector<NamedTensor>> shards(1);
    size_t shard_bytes = 0;
    uint64_t total = 0;
    for (const auto& t : tensors) {
        if (!shards.back().empty() && shard_bytes + t.view.nbytes > max_shard_bytes) {
            shards.emplace_back();
            shard_bytes = 0;
        }
        shards.back().push_back(t);
        shard_bytes += t.view.nbytes;
        total += t.view.nbytes;
    }
    std::vector<std::string> names;
    if (shards.size() == 1) {
        names.push_back(stem + ".safetensors");
        write_safetensors(dir + "/" + names[0], tensors, metadata);
        return names;
    }
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
        char name[64];
        std::snprintf(name, sizeof(name), "-%05zu-of-%05zu.safetensors", i + 1, shards.size());
        names.push_back(stem + name);
        write_safetensors(dir + "/" + names.back(), shards[i], metadata);
        for (const auto& t : shards[i]) weight_map[t.name] = names.back();
    }
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomically(dir + "/" + stem + ".safetensors.index.json",
                          [&](std::ostream& out) { out << index.dump(2) << "\n"; });
    return names;
}

}  // namespace ftl::io
