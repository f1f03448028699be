#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::io {
namespace {

// The reference refuses headers above 100 MB (safetensors MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeInfo {
    DType dtype;
    const char* name;
    size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},     {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},   {DType::kI32, "I32", 4},   {DType::kI64, "I64", 8},
    {DType::kF16, "F16", 2},   {DType::kBF16, "BF16", 2}, {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
};

const DTypeInfo& info(DType dtype) {
    for (const auto& d : kDTypes)
        if (d.dtype == dtype) return d;
    fail(ErrorKind::kInternal, "unknown safetensors dtype enum");
}

[[noreturn]] void bad_file(const std::string& source, const std::string& what) {
    fail(ErrorKind::kIo, source + ": not a valid safetensors file: " + what);
}

TensorEntry parse_entry(const std::string& name, const nlohmann::json& value,
                        const std::string& source) {
    const std::string where = source + ": tensor '" + name + "'";
    if (!value.is_object()) bad_file(source, "tensor '" + name + "' is not a JSON object");
    TensorEntry entry;
    entry.name = name;
    auto dtype = value.find("dtype");
    if (dtype == value.end() || !dtype->is_string())
        bad_file(source, "tensor '" + name + "' has no string 'dtype'");
    entry.dtype = dtype_from_name(dtype->get<std::string>(), where);

    auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array())
        bad_file(source, "tensor '" + name + "' has no 'shape' array");
    uint64_t numel = 1;
    for (const auto& dim : *shape) {
        if (!dim.is_number_unsigned())
            bad_file(source, "tensor '" + name + "' has a shape entry that is not a non-negative integer");
        uint64_t d = dim.get<uint64_t>();
        if (d != 0 && numel > UINT64_MAX / d)
            bad_file(source, "tensor '" + name + "' has a shape whose size overflows");
        numel *= d;
        entry.shape.push_back(static_cast<int64_t>(d));
    }
    auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
        bad_file(source, "tensor '" + name + "' needs 'data_offsets': [begin, end]");
    entry.begin = (*offsets)[0].get<uint64_t>();
    entry.end = (*offsets)[1].get<uint64_t>();
    if (entry.end < entry.begin)
        bad_file(source, "tensor '" + name + "' has data_offsets end < begin");
    const uint64_t size = dtype_size(entry.dtype);
    if (numel > UINT64_MAX / size || numel * size != entry.end - entry.begin)
        bad_file(source, "tensor '" + name + "' has " + std::to_string(entry.end - entry.begin) +
                             " bytes but dtype " + dtype_name(entry.dtype) + " and its shape need " +
                             std::to_string(numel * size));
    return entry;
}

}  // namespace

DType dtype_from_name(const std::string& name, const std::string& where) {
    std::vector<std::string> names;
    for (const auto& d : kDTypes) {
        if (name == d.name) return d.dtype;
        names.push_back(d.name);
    }
    fail(ErrorKind::kIo, where + ": unsupported dtype '" + name + "' (supported: " +
                             join(names, ", ") + ")");
}

const char* dtype_name(DType dtype) { return info(dtype).name; }
size_t dtype_size(DType dtype) { return info(dtype).size; }

int64_t TensorView::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

TensorView TensorView::rows(int64_t begin, int64_t end) const {
    if (shape.empty()) fail(ErrorKind::kInternal, "TensorView::rows on a scalar");
    if (begin < 0 || end < begin || end > shape[0])
        fail(ErrorKind::kInternal, "TensorView::rows [" + std::to_string(begin) + ", " +
                                       std::to_string(end) + ") outside [0, " +
                                       std::to_string(shape[0]) + ")");
    const size_t row_bytes = shape[0] == 0 ? 0 : nbytes / static_cast<size_t>(shape[0]);
    TensorView out = *this;
    out.shape[0] = end - begin;
    out.data = data + static_cast<size_t>(begin) * row_bytes;
    out.nbytes = static_cast<size_t>(end - begin) * row_bytes;
    return out;
}

SafetensorsHeader parse_safetensors_header(const std::byte* prefix, size_t prefix_size,
                                           uint64_t file_size, const std::string& source) {
    if (prefix_size < 8 || file_size < 8)
        bad_file(source, "shorter than the 8-byte header length (" + std::to_string(file_size) +
                             " bytes)");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(prefix[i]);
    if (n > kMaxHeaderBytes)
        bad_file(source, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
    if (n + 8 > file_size)
        bad_file(source, "header length " + std::to_string(n) + " runs past the end of the " +
                             std::to_string(file_size) + "-byte file (truncated download?)");
    if (n + 8 > prefix_size) fail(ErrorKind::kInternal, "safetensors prefix shorter than header");
    const char* text = reinterpret_cast<const char*>(prefix + 8);
    if (n == 0 || text[0] != '{') bad_file(source, "header does not start with '{'");

    nlohmann::json json = nlohmann::json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object()) bad_file(source, "header is not a JSON object");

    SafetensorsHeader header;
    header.data_start = 8 + n;
    for (auto it = json.begin(); it != json.end(); ++it) {
        if (it.key() == "__metadata__") {
            if (!it->is_object()) bad_file(source, "__metadata__ is not an object");
            for (auto m = it->begin(); m != it->end(); ++m) {
                if (!m->is_string()) bad_file(source, "__metadata__ value '" + m.key() + "' is not a string");
                header.metadata[m.key()] = m->get<std::string>();
            }
            continue;
        }
        header.tensors.push_back(parse_entry(it.key(), *it, source));
    }
    std::sort(header.tensors.begin(), header.tensors.end(),
              [](const TensorEntry& a, const TensorEntry& b) {
                  return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
              });
    // Tensors tile the data buffer: each starts where the previous ended, the last ends at EOF.
    uint64_t expected = 0;
    for (const auto& t : header.tensors) {
        if (t.begin != expected)
            bad_file(source, "tensor '" + t.name + "' starts at byte " + std::to_string(t.begin) +
                                 " of the data buffer, expected " + std::to_string(expected) +
                                 " (offsets overlap or leave a gap)");
        expected = t.end;
    }
    const uint64_t data_size = file_size - header.data_start;
    if (expected != data_size)
        bad_file(source, "tensors cover " + std::to_string(expected) + " bytes but the data buffer has " +
                             std::to_string(data_size) + " (truncated or padded file)");
    return header;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::kIo, path + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        fail(ErrorKind::kIo, path + ": cannot stat: " + std::strerror(err));
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size < 8) {
        ::close(fd);
        bad_file(path, "shorter than the 8-byte header length (" + std::to_string(size) + " bytes)");
    }
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_err = errno;
    ::close(fd);
    if (map == MAP_FAILED) fail(ErrorKind::kIo, path + ": cannot mmap: " + std::strerror(map_err));
    const auto* bytes = static_cast<const std::byte*>(map);
    try {
        SafetensorsHeader header = parse_safetensors_header(bytes, size, size, path);
        return std::shared_ptr<SafetensorsFile>(
            new SafetensorsFile(path, bytes, size, std::move(header)));
    } catch (...) {
        ::munmap(map, size);
        throw;
    }
}

SafetensorsFile::SafetensorsFile(std::string path, const std::byte* map, size_t size,
                                 SafetensorsHeader header)
    : path_(std::move(path)), map_(map), size_(size), header_(std::move(header)) {
    for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
    ::munmap(const_cast<std::byte*>(map_), size_);
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) {
        std::vector<std::string> names;
        for (const auto& [n, i] : index_) names.push_back(n);
        fail(ErrorKind::kIo, path_ + ": no tensor named '" + name + "'" + did_you_mean(name, names));
    }
    return header_.tensors[it->second];
}

TensorView SafetensorsFile::tensor(const std::string& name) const {
    const TensorEntry& e = entry(name);
    TensorView view;
    view.dtype = e.dtype;
    view.shape = e.shape;
    view.data = map_ + header_.data_start + e.begin;
    view.nbytes = e.end - e.begin;
    return view;
}

void SafetensorsFile::prefetch(const std::string& name) const {
    const TensorEntry& e = entry(name);
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    const size_t begin = (header_.data_start + e.begin) / page * page;
    const size_t end = header_.data_start + e.end;
    if (end > begin)
        ::madvise(const_cast<std::byte*>(map_) + begin, end - begin, MADV_WILLNEED);
}

}  // namespace ftl::io
