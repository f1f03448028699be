#include "util/checksum.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "util/error.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ftl {
namespace {

constexpr uint32_t kCastagnoli = 0x82F63B78u;  // CRC-32C polynomial, reflected

std::array<uint32_t, 256> make_table() {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ kCastagnoli : c >> 1;
        table[i] = c;
    }
    return table;
}

// Both work on the inverted register (crc ^ 0xffffffff).
uint32_t extend_table(uint32_t reg, const uint8_t* p, size_t size) {
    static const std::array<uint32_t, 256> table = make_table();  // constant, computed once
    for (size_t i = 0; i < size; ++i) reg = table[(reg ^ p[i]) & 0xffu] ^ (reg >> 8);
    return reg;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t extend_sse42(uint32_t reg, const uint8_t* p, size_t size) {
    uint64_t r = reg;
    for (; size >= 8; size -= 8, p += 8) {
        uint64_t word;
        std::memcpy(&word, p, 8);
        r = _mm_crc32_u64(r, word);
    }
    uint32_t r32 = static_cast<uint32_t>(r);
    for (; size > 0; --size, ++p) r32 = _mm_crc32_u8(r32, *p);
    return r32;
}
#endif

uint32_t extend_register(uint32_t reg, const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
    static const bool has_sse42 = __builtin_cpu_supports("sse4.2");  // a CPU fact, read once
    if (has_sse42) return extend_sse42(reg, p, size);
#endif
    return extend_table(reg, p, size);
}

}  // namespace

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size) {
    return extend_register(crc ^ 0xffffffffu, data, size) ^ 0xffffffffu;
}

uint32_t crc32c(const void* data, size_t size) { return crc32c_extend(0, data, size); }

FileChecksum checksum_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::kIo, path + ": cannot open: " + std::strerror(errno));
    FileChecksum sum;
    std::vector<char> buffer(4 << 20);
    for (;;) {
        const ssize_t got = ::read(fd, buffer.data(), buffer.size());
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            const std::string reason = std::strerror(errno);
            ::close(fd);
            fail(ErrorKind::kIo, path + ": cannot read: " + reason);
        }
        if (got == 0) break;
        sum.crc32c = crc32c_extend(sum.crc32c, buffer.data(), static_cast<size_t>(got));
        sum.bytes += static_cast<uint64_t>(got);
    }
    ::close(fd);
    return sum;
}

}  // namespace ftl
