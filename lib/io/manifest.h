// Checkpoint manifests: manifest.json, written last into a checkpoint folder, lists every other
// file with its size and CRC-32C, plus what the checkpoint belongs to (`identity`: base model,
// adapter configuration, world size, ...). A resume verifies it and refuses a partial, corrupt or
// foreign checkpoint before reading anything else; `ftlaunch verify` runs the same check by hand.
//
//   {"format": "ftlaunch-checkpoint", "version": 1,
//    "files": {"adapter_model.safetensors": {"bytes": 29824, "crc32c": "1a2b3c4d"}, ...},
//    "identity": {...}}
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace ftl::io {

inline constexpr const char* kManifestName = "manifest.json";

// Checksums every regular file directly in `dir` (sub-folders are not expected) and writes
// dir/manifest.json atomically (fsynced).
void write_manifest(const std::string& dir, const nlohmann::json& identity);

struct VerifiedCheckpoint {
    nlohmann::json identity;
    int64_t files = 0;
    uint64_t bytes = 0;
};

// Checks `dir` against its manifest: the manifest present and well-formed, every listed file
// present with its size and CRC-32C, no unlisted file. Throws Error(kConfig) naming the folder,
// the file and what differs (and that the checkpoint is partial or corrupt).
VerifiedCheckpoint verify_manifest(const std::string& dir);

}  // namespace ftl::io
