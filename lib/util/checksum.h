// CRC-32C (Castagnoli), the checksum of TensorBoard's record framing and of checkpoint manifests.
// Uses the SSE4.2 crc32 instruction when the CPU has it (about 10 GB/s), else a table (~0.5 GB/s).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ftl {

// CRC-32C of `size` bytes; crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void* data, size_t size);

// Running form: start with crc = 0, feed the pieces in order; the result equals crc32c of them
// concatenated.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);

// The file's size and CRC-32C, read in 4 MiB pieces. Throws Error(kIo) naming the file.
struct FileChecksum {
    uint64_t bytes = 0;
    uint32_t crc32c = 0;
};
FileChecksum checksum_file(const std::string& path);

}  // namespace ftl
