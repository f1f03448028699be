#include "util/heartbeat.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace ftl {

int64_t unix_milliseconds() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

Heartbeat::Heartbeat(const std::string& path) {
    if (path.empty()) return;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(ErrorKind::kIo, path + ": cannot open the heartbeat file: " + std::strerror(errno));
}

Heartbeat Heartbeat::from_environment() {
    const char* path = std::getenv("FTLAUNCH_HEARTBEAT");
    return path ? Heartbeat(path) : Heartbeat();
}

Heartbeat::~Heartbeat() {
    if (fd_ >= 0) ::close(fd_);
}

Heartbeat::Heartbeat(Heartbeat&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

Heartbeat& Heartbeat::operator=(Heartbeat&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        other.fd_ = -1;
    }
    return *this;
}

void Heartbeat::write(const std::string& what, bool watched) const {
    if (fd_ < 0) return;
    char record[kRecordBytes];
    std::memset(record, ' ', sizeof record);
    const std::string head = std::to_string(unix_milliseconds()) + (watched ? " W " : " U ");
    const size_t room = sizeof record - 1 - head.size();
    std::memcpy(record, head.data(), head.size());
    std::memcpy(record + head.size(), what.data(), std::min(room, what.size()));
    record[sizeof record - 1] = '\n';
    (void)!::pwrite(fd_, record, sizeof record, 0);
}

std::optional<HeartbeatRecord> read_heartbeat(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    char record[Heartbeat::kRecordBytes];
    const ssize_t got = ::pread(fd, record, sizeof record, 0);
    ::close(fd);
    if (got != static_cast<ssize_t>(sizeof record) || record[sizeof record - 1] != '\n') return std::nullopt;
    const std::string text(record, sizeof record - 1);
    const size_t space = text.find(' ');
    if (space == std::string::npos || space + 3 > text.size() || (text[space + 1] != 'W' && text[space + 1] != 'U'))
        return std::nullopt;
    HeartbeatRecord out;
    out.unix_ms = std::strtoll(text.substr(0, space).c_str(), nullptr, 10);
    out.watched = text[space + 1] == 'W';
    out.phase = text.substr(space + 3);
    out.phase.erase(out.phase.find_last_not_of(' ') + 1);
    return out;
}

}  // namespace ftl
