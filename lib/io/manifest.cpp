#include "io/manifest.h"

#include <cstdio>
#include <filesystem>
#include <map>

#include "io/atomic_file.h"
#include "util/checksum.h"
#include "util/error.h"
#include "util/files.h"

namespace ftl::io {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "ftlaunch-checkpoint";
constexpr int kVersion = 1;

std::string hex(uint32_t value) {
    char text[9];
    std::snprintf(text, sizeof text, "%08x", value);
    return text;
}

std::map<std::string, fs::path> files_in(const std::string& dir) {
    std::map<std::string, fs::path> out;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (name == kManifestName) continue;
        if (!entry.is_regular_file())
            fail(ErrorKind::kConfig, dir + ": '" + name + "' is not a regular file; a checkpoint folder holds only files");
        out.emplace(name, entry.path());
    }
    return out;
}

}  // namespace

void write_manifest(const std::string& dir, const nlohmann::json& identity) {
    nlohmann::json files = nlohmann::json::object();
    for (const auto& [name, path] : files_in(dir)) {
        const FileChecksum sum = checksum_file(path.string());
        files[name] = {{"bytes", sum.bytes}, {"crc32c", hex(sum.crc32c)}};
    }
    const nlohmann::json manifest = {{"format", kFormat}, {"version", kVersion}, {"files", files}, {"identity", identity}};
    write_file_atomically((fs::path(dir) / kManifestName).string(),
                          [&](std::ostream& out) { out << manifest.dump(2) << "\n"; });
}

VerifiedCheckpoint verify_manifest(const std::string& dir) {
    const std::string path = (fs::path(dir) / kManifestName).string();
    auto refuse = [&](const std::string& what) {
        fail(ErrorKind::kConfig, dir + ": " + what + " -- the checkpoint is partial or corrupt; resume from another one");
    };
    const auto text = read_text_file(path);
    if (!text) refuse("no manifest.json (every checkpoint this ftlaunch writes has one, written last)");
    const nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (manifest.is_discarded() || !manifest.is_object() || manifest.value("format", nlohmann::json()) != kFormat ||
        !manifest.contains("files") || !manifest.at("files").is_object())
        refuse("manifest.json is not an ftlaunch checkpoint manifest");
    const nlohmann::json version = manifest.value("version", nlohmann::json());
    if (!version.is_number_integer() || version.get<int64_t>() != kVersion)
        fail(ErrorKind::kConfig, path + ": manifest version " + version.dump() + " is not one this ftlaunch reads (" +
                                     std::to_string(kVersion) + ")");
    VerifiedCheckpoint verified;
    const std::map<std::string, fs::path> present = files_in(dir);
    for (const auto& [name, expected] : manifest.at("files").items()) {
        const auto it = present.find(name);
        if (it == present.end()) refuse("'" + name + "' is listed in manifest.json but missing");
        if (!expected.is_object() || !expected.contains("bytes") || !expected.at("bytes").is_number_unsigned() ||
            !expected.contains("crc32c") || !expected.at("crc32c").is_string())
            refuse("manifest.json's entry for '" + name + "' has no bytes (a count) and crc32c (8 hex digits)");
        const FileChecksum sum = checksum_file(it->second.string());
        const uint64_t bytes = expected.at("bytes").get<uint64_t>();
        if (sum.bytes != bytes)
            refuse("'" + name + "' has " + std::to_string(sum.bytes) + " bytes, manifest.json says " + std::to_string(bytes));
        const std::string crc = expected.at("crc32c").get<std::string>();
        if (hex(sum.crc32c) != crc)
            refuse("'" + name + "' has CRC-32C " + hex(sum.crc32c) + ", manifest.json says " + crc + " (its bytes changed)");
        ++verified.files;
        verified.bytes += sum.bytes;
    }
    for (const auto& [name, file] : present)
        if (!manifest.at("files").contains(name)) refuse("'" + name + "' is not listed in manifest.json");
    verified.identity = manifest.value("identity", nlohmann::json::object());
    if (!verified.identity.is_object()) refuse("manifest.json's identity is not an object");
    return verified;
}

}  // namespace ftl::io
