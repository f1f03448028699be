#include "report/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"
#include "util/files.h"
#include "util/system.h"

namespace ftl::report {

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (append ? 0 : O_TRUNC), 0644);
    if (fd_ < 0) fail(ErrorKind::kIo, "cannot open '" + path + "' for the run's metrics: " + std::strerror(errno));
}

MetricsLog::~MetricsLog() {
    if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::write(nlohmann::json record) {
    record["schema"] = kMetricsSchema;
    record["time"] = unix_seconds();
    const std::string line = record.dump() + "\n";
    size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail(ErrorKind::kIo, "cannot append to '" + path_ + "': " + std::strerror(errno));
        done += static_cast<size_t>(n);
    }
}

MetricsFile read_metrics(const std::string& path) {
    const std::optional<std::string> read = read_text_file(path);
    if (!read) fail(ErrorKind::kIo, "cannot read '" + path + "' (the run's metrics.jsonl; is this a run's output_dir?)");
    const std::string& text = *read;
    MetricsFile file;
    size_t begin = 0;
    for (int line_number = 1; begin < text.size(); ++line_number) {
        const size_t end = text.find('\n', begin);
        if (end == std::string::npos) {
            file.incomplete_last_line = true;
            break;
        }
        const std::string line = text.substr(begin, end - begin);
        begin = end + 1;
        if (line.empty()) continue;
        nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!record.is_object())
            fail(ErrorKind::kConfig, path + ":" + std::to_string(line_number) + ": not a JSON object (a metrics.jsonl line)");
        file.records.push_back(std::move(record));
    }
    return file;
}

}  // namespace ftl::report
