// Scratch files for the fuzz targets whose parsers read from a path: one folder per fuzzing
// process (on /dev/shm when present, so the many small writes stay in memory).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace ftl::fuzz {

inline const std::string& scratch_dir() {
    static const std::string dir = [] {
        const std::filesystem::path base =
            std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
        const auto path = base / ("ftl_fuzz_" + std::to_string(getpid()));
        std::filesystem::create_directories(path);
        return path.string();
    }();
    return dir;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

inline void write_file(const std::string& path, const std::string& text) {
    write_file(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

}  // namespace ftl::fuzz
