#include "report/event_file.h"

#include "util/checksum.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/error.h"
#include "util/system.h"

namespace ftl::report {
namespace {

uint32_t masked_crc(const void* data, size_t size) {
    const uint32_t crc = crc32c(data, size);
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

// Protocol-buffer wire format: a field key is (number << 3) | wire type.
enum WireType : uint8_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t{field} << 3) | type); }
template <typename T>
void put_fixed(std::string& out, T value) {  // little endian, as x86 and ARM store it
    char bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    out.append(bytes, sizeof(T));
}
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
    put_key(out, field, kLengthDelimited);
    put_varint(out, bytes.size());
    out += bytes;
}

// Event with wall_time and step, plus either file_version or a summary.
std::string encode_event(double wall_time, int64_t step, const std::string* file_version, const std::string* summary) {
    std::string event;
    put_key(event, 1, kFixed64);
    put_fixed(event, wall_time);
    put_key(event, 2, kVarint);
    put_varint(event, static_cast<uint64_t>(step));
    if (file_version) put_bytes(event, 3, *file_version);
    if (summary) put_bytes(event, 5, *summary);
    return event;
}

}  // namespace

EventFileWriter::EventFileWriter(const std::string& log_dir) {
    std::error_code ec;
    std::filesystem::create_directories(log_dir, ec);
    const double now = unix_seconds();
    // The trailing counter keeps two writers in one process and second apart.
    for (int n = 0; !file_ && n < 1000; ++n) {
        path_ = log_dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + host_name() + "." +
                std::to_string(getpid()) + "." + std::to_string(n);
        if (std::filesystem::exists(path_)) continue;
        file_ = std::fopen(path_.c_str(), "wb");
        if (!file_) break;
    }
    if (!file_)
        fail(ErrorKind::kIo, "cannot create a TensorBoard event file in '" + log_dir + "' (--logging_dir): " +
                                 (ec ? ec.message() : std::strerror(errno)));
    const std::string version = "brain.Event:2";
    write_record(encode_event(now, 0, &version, nullptr));
}

EventFileWriter::~EventFileWriter() {
    if (file_) std::fclose(file_);
}

void EventFileWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
    std::string summary_value;
    put_bytes(summary_value, 1, tag);
    put_key(summary_value, 2, kFixed32);
    put_fixed(summary_value, static_cast<float>(value));
    std::string summary;
    put_bytes(summary, 1, summary_value);
    write_record(encode_event(wall_time, step, nullptr, &summary));
}

void EventFileWriter::write_record(const std::string& data) {
    std::string record;
    const uint64_t length = data.size();
    put_fixed(record, length);
    put_fixed(record, masked_crc(&length, sizeof(length)));
    record += data;
    put_fixed(record, masked_crc(data.data(), data.size()));
    if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() || std::fflush(file_) != 0)
        fail(ErrorKind::kIo, "cannot write the TensorBoard event file '" + path_ + "': " + std::strerror(errno));
}

}  // namespace ftl::report
