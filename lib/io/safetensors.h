// safetensors: the HF weight format, read through mmap with zero-copy views.
//
// Layout (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian u64 N,
// then N bytes of UTF-8 JSON (the header), then the data buffer. The header maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data buffer, row-major,
// little-endian) plus an optional "__metadata__" string->string map. We accept exactly what the
// reference accepts: tensors must tile the data buffer with no gap and no overlap, and each byte
// range must equal product(shape) * element size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ftl::io {

enum class DType { kBool, kU8, kI8, kI16, kI32, kI64, kF16, kBF16, kF32, kF64 };

// "BF16" -> kBF16; throws ftl::Error naming `where` and the accepted names for anything else.
DType dtype_from_name(const std::string& name, const std::string& where);
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);  // bytes per element

// A borrowed view of one tensor's bytes. Valid while the file (or buffer) it came from lives.
struct TensorView {
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    const std::byte* data = nullptr;
    size_t nbytes = 0;

    int64_t numel() const;
    // Rows [begin, end) of the first dimension: a contiguous sub-range, still zero-copy.
    // Throws when the range is outside [0, shape[0]] or the tensor is a scalar.
    TensorView rows(int64_t begin, int64_t end) const;
};

// One header entry: where the tensor lives in the data buffer.
struct TensorEntry {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte offsets relative to the data buffer
    uint64_t end = 0;
};

struct SafetensorsHeader {
    std::vector<TensorEntry> tensors;  // in data-buffer order
    std::map<std::string, std::string> metadata;
    uint64_t data_start = 0;  // file offset of the data buffer (8 + N)
};

// Parses and validates the header of a safetensors image of `file_size` bytes whose first bytes
// are `prefix` (at least the 8-byte length and the JSON; more is fine). `source` names the file
// in errors. Throws ftl::Error(kIo) on any violation; never reads past prefix_size.
SafetensorsHeader parse_safetensors_header(const std::byte* prefix, size_t prefix_size,
                                           uint64_t file_size, const std::string& source);

// A read-only memory map of one .safetensors file. Tensor views point into the map: only the
// pages a caller touches are read from disk, so a rank that asks for a slice reads only that slice.
class SafetensorsFile {
public:
    static std::shared_ptr<SafetensorsFile> open(const std::string& path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::string& path() const { return path_; }
    const SafetensorsHeader& header() const { return header_; }
    bool contains(const std::string& name) const;
    const TensorEntry& entry(const std::string& name) const;  // throws naming the file
    TensorView tensor(const std::string& name) const;
    // Asks the kernel to start reading this tensor's pages now (madvise WILLNEED).
    void prefetch(const std::string& name) const;

private:
    SafetensorsFile(std::string path, const std::byte* map, size_t size, SafetensorsHeader header);
    std::string path_;
    const std::byte* map_ = nullptr;
    size_t size_ = 0;
    SafetensorsHeader header_;
    std::map<std::string, size_t> index_;  // name -> header_.tensors position
};

}  // namespace ftl::io
