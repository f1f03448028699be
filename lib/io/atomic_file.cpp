#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "util/error.h"

namespace ftl::io {
namespace {

void fsync_path(const std::string& path, int flags) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::kIo, path + ": cannot open to sync: " + std::strerror(errno));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) fail(ErrorKind::kIo, path + ": fsync failed: " + std::strerror(err));
}

}  // namespace

void sync_directory(const std::string& dir) { fsync_path(dir, O_RDONLY | O_DIRECTORY); }

void write_file_atomically(const std::string& path,
                           const std::function<void(std::ostream&)>& write) {
    namespace fs = std::filesystem;
    const fs::path target(path);
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    if (!fs::is_directory(dir))
        fail(ErrorKind::kIo, path + ": cannot write: folder " + dir.string() + " does not exist");
    const std::string temp =
        (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
    try {
        {
            std::ofstream out(temp, std::ios::binary | std::ios::trunc);
            if (!out) fail(ErrorKind::kIo, path + ": cannot create " + temp + ": " + std::strerror(errno));
            write(out);
            out.flush();
            if (!out) fail(ErrorKind::kIo, path + ": write failed (disk full?)");
        }
        fsync_path(temp, O_RDONLY);
        if (std::rename(temp.c_str(), path.c_str()) != 0)
            fail(ErrorKind::kIo, path + ": cannot rename " + temp + " into place: " + std::strerror(errno));
    } catch (...) {
        std::error_code ignored;
        fs::remove(temp, ignored);
        throw;
    }
    sync_directory(dir.string());
}

}  // namespace ftl::io
