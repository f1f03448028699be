#include "data/row_cache.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "util/error.h"

namespace ftl::data {
namespace {

namespace fs = std::filesystem;
constexpr const char* kFormat = "ftlaunch-rows-1";

template <typename T>
io::TensorView view_of(const std::vector<T>& values, io::DType dtype) {
    return {dtype, {static_cast<int64_t>(values.size())}, reinterpret_cast<const std::byte*>(values.data()),
            values.size() * sizeof(T)};
}

template <typename T>
std::vector<T> values_of(const io::SafetensorsFile& file, const std::string& name, io::DType dtype) {
    const io::TensorView view = file.tensor(name);
    if (view.dtype != dtype || view.shape.size() != 1)
        fail(ErrorKind::kIo, file.path() + ": '" + name + "' is not a " + io::dtype_name(dtype) + " vector");
    std::vector<T> out(static_cast<size_t>(view.numel()));
    if (view.nbytes > 0) std::memcpy(out.data(), view.data, view.nbytes);
    return out;
}

}  // namespace

void Fingerprint::mix(const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) {
        state_ ^= bytes[i];
        state_ *= 1099511628211ull;
    }
}

Fingerprint& Fingerprint::add(const std::string& text) {
    const uint64_t size = text.size();  // length-prefixed, so ("ab","c") != ("a","bc")
    mix(&size, sizeof size);
    mix(text.data(), text.size());
    return *this;
}

Fingerprint& Fingerprint::add_file_identity(const std::string& path) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) return add(path).add("missing");
    const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
    return add(path).add(std::to_string(size)).add(std::to_string(mtime));
}

Fingerprint& Fingerprint::add_file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return add(path).add("missing");
    add(path);
    std::vector<char> buffer(1 << 16);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
        mix(buffer.data(), static_cast<size_t>(in.gcount()));
    return *this;
}

std::string Fingerprint::hex() const {
    static const char* digits = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 0; i < 16; ++i) out[static_cast<size_t>(i)] = digits[(state_ >> (60 - 4 * i)) & 0xf];
    return out;
}

void write_row_cache(const std::string& path, const std::vector<Row>& rows, const std::string& key) {
    std::vector<int64_t> offsets{0};
    std::vector<int32_t> ids, labels, positions;
    for (const Row& row : rows) {
        ids.insert(ids.end(), row.input_ids.begin(), row.input_ids.end());
        labels.insert(labels.end(), row.labels.begin(), row.labels.end());
        positions.insert(positions.end(), row.position_ids.begin(), row.position_ids.end());
        offsets.push_back(static_cast<int64_t>(ids.size()));
    }
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    io::write_safetensors(path,
                          {{"offsets", view_of(offsets, io::DType::kI64)},
                           {"input_ids", view_of(ids, io::DType::kI32)},
                           {"labels", view_of(labels, io::DType::kI32)},
                           {"position_ids", view_of(positions, io::DType::kI32)}},
                          {{"format", kFormat}, {"key", key}});
}

std::optional<std::vector<Row>> read_row_cache(const std::string& path, const std::string& key) {
    if (!fs::exists(path)) return std::nullopt;
    const auto file = io::SafetensorsFile::open(path);
    const auto& metadata = file->header().metadata;
    const auto format = metadata.find("format");
    const auto stored_key = metadata.find("key");
    if (format == metadata.end() || format->second != kFormat || stored_key == metadata.end() || stored_key->second != key)
        fail(ErrorKind::kIo, path + ": not a tokenised-rows cache of format " + kFormat + " with key " + key);
    const auto offsets = values_of<int64_t>(*file, "offsets", io::DType::kI64);
    const auto ids = values_of<int32_t>(*file, "input_ids", io::DType::kI32);
    const auto labels = values_of<int32_t>(*file, "labels", io::DType::kI32);
    const auto positions = values_of<int32_t>(*file, "position_ids", io::DType::kI32);
    const bool consistent = !offsets.empty() && offsets.front() == 0 &&
                            offsets.back() == static_cast<int64_t>(ids.size()) && labels.size() == ids.size() &&
                            positions.size() == ids.size();
    if (!consistent) fail(ErrorKind::kIo, path + ": the cached rows are inconsistent (offsets and token counts disagree)");
    // Non-decreasing from 0 to the token count, so every row lies inside the columns.
    for (size_t r = 0; r + 1 < offsets.size(); ++r)
        if (offsets[r] > offsets[r + 1])
            fail(ErrorKind::kIo, path + ": the cached row offsets decrease at row " + std::to_string(r));
    std::vector<Row> rows;
    rows.reserve(offsets.size() - 1);
    for (size_t r = 0; r + 1 < offsets.size(); ++r) {
        const int64_t begin = offsets[r], end = offsets[r + 1];
        Row row;
        row.input_ids.assign(ids.begin() + begin, ids.begin() + end);
        row.labels.assign(labels.begin() + begin, labels.begin() + end);
        row.position_ids.assign(positions.begin() + begin, positions.begin() + end);
        rows.push_back(std::move(row));
    }
    return rows;
}

}  // namespace ftl::data
