#include "io/safetensors_writer.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ftl::io {

namespace {

// One file: the header from the specs, then each tensor's bytes from the source, atomically.
void write_file(const std::string& path, const std::vector<TensorSpec>& specs, size_t first, size_t count,
                const TensorSource& source, const std::map<std::string, std::string>& metadata) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::set<std::string> seen;
    uint64_t offset = 0;
    for (size_t i = first; i < first + count; ++i) {
        const TensorSpec& t = specs[i];
        if (!seen.insert(t.name).second) fail(ErrorKind::kInternal, path + ": tensor '" + t.name + "' written twice");
        header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
        offset += t.nbytes();
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
        for (size_t i = first; i < first + count; ++i) {
            const TensorView view = source(i);
            if (view.dtype != specs[i].dtype || view.shape != specs[i].shape || view.nbytes != specs[i].nbytes())
                fail(ErrorKind::kInternal, path + ": tensor '" + specs[i].name + "' does not match its planned dtype and shape");
            out.write(reinterpret_cast<const char*>(view.data), static_cast<std::streamsize>(view.nbytes));
        }
    });
}

std::vector<TensorSpec> specs_of(const std::vector<NamedTensor>& tensors, const std::string& where) {
    std::vector<TensorSpec> specs;
    for (const auto& t : tensors) {
        specs.push_back({t.name, t.view.dtype, t.view.shape});
        if (specs.back().nbytes() != t.view.nbytes)
            fail(ErrorKind::kInternal, where + ": tensor '" + t.name + "' byte size does not match its shape");
    }
    return specs;
}

}  // namespace

size_t TensorSpec::nbytes() const {
    size_t n = dtype_size(dtype);
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    write_file(path, specs_of(tensors, path), 0, tensors.size(), [&](size_t i) { return tensors[i].view; }, metadata);
}

std::vector<std::string> write_sharded_safetensors(const std::string& dir,
                                                   const std::vector<NamedTensor>& tensors,
                                                   size_t max_shard_bytes, const std::string& stem,
                                                   const std::map<std::string, std::string>& metadata) {
    return write_sharded_safetensors(dir, specs_of(tensors, dir), [&](size_t i) { return tensors[i].view; },
                                     max_shard_bytes, stem, metadata);
}

std::vector<std::string> write_sharded_safetensors(const std::string& dir, const std::vector<TensorSpec>& specs,
                                                   const TensorSource& source, size_t max_shard_bytes,
                                                   const std::string& stem,
                                                   const std::map<std::string, std::string>& metadata) {
    std::vector<std::pair<size_t, size_t>> shards{{0, 0}};  // (first spec, count)
    size_t shard_bytes = 0;
    uint64_t total = 0;
    for (const auto& t : specs) {
        if (shards.back().second > 0 && shard_bytes + t.nbytes() > max_shard_bytes) {
            shards.emplace_back(shards.back().first + shards.back().second, 0);
            shard_bytes = 0;
        }
        ++shards.back().second;
        shard_bytes += t.nbytes();
        total += t.nbytes();
    }
    std::vector<std::string> names;
    if (shards.size() == 1) {
        names.push_back(stem + ".safetensors");
        write_file(dir + "/" + names[0], specs, 0, specs.size(), source, metadata);
        return names;
    }
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
        char name[64];
        std::snprintf(name, sizeof(name), "-%05zu-of-%05zu.safetensors", i + 1, shards.size());
        names.push_back(stem + name);
        write_file(dir + "/" + names.back(), specs, shards[i].first, shards[i].second, source, metadata);
        for (size_t k = shards[i].first; k < shards[i].first + shards[i].second; ++k) weight_map[specs[k].name] = names.back();
    }
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomically(dir + "/" + stem + ".safetensors.index.json",
                          [&](std::ostream& out) { out << index.dump(2) << "\n"; });
    return names;
}

}  // namespace ftl::io
