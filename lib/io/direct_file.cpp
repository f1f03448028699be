#include "io/direct_file.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <thread>
#include <vector>

#include "util/error.h"

namespace ftl::io {
namespace {

// The kernel AIO system calls (glibc has no wrappers; libaio is a thin layer over these).
long sys_io_setup(unsigned events, aio_context_t* context) { return syscall(SYS_io_setup, events, context); }
long sys_io_destroy(aio_context_t context) { return syscall(SYS_io_destroy, context); }
long sys_io_submit(aio_context_t context, long count, iocb** requests) {
    return syscall(SYS_io_submit, context, count, requests);
}
long sys_io_getevents(aio_context_t context, long min, long max, io_event* events) {
    return syscall(SYS_io_getevents, context, min, max, events, nullptr);
}

std::string reason(int error) {
    return error == ENOSPC ? "the disk is full (ENOSPC)" : std::string(std::strerror(error));
}

bool aligned(uint64_t value) { return value % kDirectAlignment == 0; }

}  // namespace

uint64_t direct_size(uint64_t bytes) { return (bytes + kDirectAlignment - 1) / kDirectAlignment * kDirectAlignment; }

void AlignedBuffer::Free::operator()(void* p) const { std::free(p); }

AlignedBuffer::AlignedBuffer(uint64_t bytes) : size_(direct_size(bytes)) {
    void* p = nullptr;
    if (size_ && posix_memalign(&p, kDirectAlignment, size_) != 0)
        fail(ErrorKind::kIo, "cannot allocate " + std::to_string(size_) + " bytes of aligned host memory");
    if (p) std::memset(p, 0, size_);
    data_.reset(p);
}

DirectFile::DirectFile(const std::string& path, uint64_t bytes, const AioOptions& options, const std::string& what)
    : path_(path), what_(what), size_(direct_size(bytes)), options_(options) {
    if (options_.block_size == 0 || !aligned(options_.block_size))
        fail(ErrorKind::kConfig, "aio.block_size " + std::to_string(options_.block_size) + ": must be a positive multiple of " +
                                     std::to_string(kDirectAlignment) + " bytes (O_DIRECT transfers whole pages)");
    if (options_.queue_depth < 1) fail(ErrorKind::kConfig, "aio.queue_depth " + std::to_string(options_.queue_depth) + ": must be >= 1");
    if (options_.thread_count < 1)
        fail(ErrorKind::kConfig, "aio.thread_count " + std::to_string(options_.thread_count) + ": must be >= 1");
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd_ < 0) fail(ErrorKind::kIo, path_ + ": cannot open the " + what_ + " with O_DIRECT: " + reason(errno));
    if (size_ > 0) {
        const int error = posix_fallocate(fd_, 0, static_cast<off_t>(size_));
        if (error != 0) {
            ::close(fd_);
            ::unlink(path_.c_str());
            fail(ErrorKind::kIo, path_ + ": cannot reserve " + std::to_string(size_) + " bytes for the " + what_ + ": " +
                                     reason(error));
        }
    }
    aio_context_t context = 0;
    if (sys_io_setup(static_cast<unsigned>(options_.queue_depth), &context) != 0) aio_unavailable_ = std::strerror(errno);
    else sys_io_destroy(context);
}

DirectFile::~DirectFile() {
    if (fd_ >= 0) ::close(fd_);
}

std::string DirectFile::engine() const {
    return aio_unavailable_.empty() ? "kernel AIO" : "pread/pwrite (kernel AIO unavailable: " + aio_unavailable_ + ")";
}

void DirectFile::write(const void* data, uint64_t bytes, uint64_t offset) const {
    transfer(true, const_cast<void*>(data), bytes, offset);
}

void DirectFile::read(void* data, uint64_t bytes, uint64_t offset) const { transfer(false, data, bytes, offset); }

std::future<void> DirectFile::write_async(const void* data, uint64_t bytes, uint64_t offset) const {
    return std::async(std::launch::async, [this, data, bytes, offset] { write(data, bytes, offset); });
}

std::future<void> DirectFile::read_async(void* data, uint64_t bytes, uint64_t offset) const {
    return std::async(std::launch::async, [this, data, bytes, offset] { read(data, bytes, offset); });
}

void DirectFile::transfer(bool writing, void* data, uint64_t bytes, uint64_t offset) const {
    if (!aligned(reinterpret_cast<uintptr_t>(data)) || !aligned(bytes) || !aligned(offset))
        fail(ErrorKind::kInternal, path_ + ": an O_DIRECT transfer needs 4096-byte aligned memory, length and offset");
    if (offset + bytes > size_)
        fail(ErrorKind::kInternal, path_ + ": transfer past the end of the " + what_ + " (" + std::to_string(offset + bytes) +
                                       " > " + std::to_string(size_) + " bytes)");
    if (bytes == 0) return;
    const uint64_t pieces = (bytes + options_.block_size - 1) / options_.block_size;
    const int threads = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(options_.thread_count), pieces));
    if (threads == 1) {
        transfer_pieces(writing, static_cast<char*>(data), bytes, offset, 0, 1);
        return;
    }
    std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            try {
                transfer_pieces(writing, static_cast<char*>(data), bytes, offset, t, threads);
            } catch (...) {
                errors[static_cast<size_t>(t)] = std::current_exception();
            }
        });
    for (auto& w : workers) w.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

// Thread `thread` of `threads` moves pieces thread, thread + threads, ... of the range.
void DirectFile::transfer_pieces(bool writing, char* data, uint64_t bytes, uint64_t offset, int thread,
                                 int threads) const {
    const uint64_t block = options_.block_size;
    std::vector<uint64_t> mine;  // start of each piece, relative to the range
    for (uint64_t at = static_cast<uint64_t>(thread) * block; at < bytes; at += static_cast<uint64_t>(threads) * block)
        mine.push_back(at);
    auto failed = [&](uint64_t at, int error) {
        fail(ErrorKind::kIo, path_ + ": cannot " + (writing ? "write " : "read ") + std::to_string(std::min(block, bytes - at)) +
                                 " bytes at offset " + std::to_string(offset + at) + " of the " + what_ + ": " + reason(error));
    };
    auto short_transfer = [&](uint64_t at, long long done) {
        fail(ErrorKind::kIo, path_ + ": " + (writing ? "wrote " : "read ") + std::to_string(done) + " of " +
                                 std::to_string(std::min(block, bytes - at)) + " bytes at offset " + std::to_string(offset + at) +
                                 " of the " + what_ + (writing ? " (is the disk full?)" : " (was the file truncated?)"));
    };
    if (!aio_unavailable_.empty()) {
        for (uint64_t at : mine) {
            const size_t n = static_cast<size_t>(std::min(block, bytes - at));
            const ssize_t done = writing ? ::pwrite(fd_, data + at, n, static_cast<off_t>(offset + at))
                                         : ::pread(fd_, data + at, n, static_cast<off_t>(offset + at));
            if (done < 0) failed(at, errno);
            if (static_cast<size_t>(done) != n) short_transfer(at, done);
        }
        return;
    }
    aio_context_t context = 0;
    if (sys_io_setup(static_cast<unsigned>(options_.queue_depth), &context) != 0) failed(0, errno);
    struct Context {  // destroys the AIO context however this function ends
        aio_context_t id;
        ~Context() { sys_io_destroy(id); }
    } guard{context};
    const size_t depth = static_cast<size_t>(options_.queue_depth);
    std::vector<iocb> slots(depth);
    std::vector<size_t> free_slots;
    for (size_t i = depth; i-- > 0;) free_slots.push_back(i);
    std::vector<io_event> events(depth);
    size_t next = 0, in_flight = 0;
    while (next < mine.size() || in_flight > 0) {
        std::vector<iocb*> batch;
        while (next < mine.size() && !free_slots.empty()) {
            const size_t slot = free_slots.back();
            free_slots.pop_back();
            const uint64_t at = mine[next++];
            iocb& request = slots[slot];
            std::memset(&request, 0, sizeof request);
            request.aio_lio_opcode = writing ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
            request.aio_fildes = static_cast<uint32_t>(fd_);
            request.aio_buf = reinterpret_cast<uint64_t>(data + at);
            request.aio_nbytes = std::min(block, bytes - at);
            request.aio_offset = static_cast<int64_t>(offset + at);
            request.aio_data = slot;
            batch.push_back(&request);
            if (options_.single_submit) break;
        }
        if (!batch.empty()) {
            const long submitted = sys_io_submit(context, static_cast<long>(batch.size()), batch.data());
            if (submitted < 0) failed(static_cast<uint64_t>(reinterpret_cast<char*>(batch.front()->aio_buf) - data), errno);
            // Requests the kernel did not take go back to the queue.
            for (size_t i = static_cast<size_t>(submitted); i < batch.size(); ++i) {
                free_slots.push_back(static_cast<size_t>(batch[i]->aio_data));
                --next;
            }
            in_flight += static_cast<size_t>(submitted);
            if (submitted == 0 && in_flight == 0) failed(0, EAGAIN);
        }
        if (in_flight == 0) continue;
        const long got = sys_io_getevents(context, 1, static_cast<long>(in_flight), events.data());
        if (got < 0) {
            if (errno == EINTR) continue;
            failed(0, errno);
        }
        for (long e = 0; e < got; ++e) {
            const size_t slot = static_cast<size_t>(events[static_cast<size_t>(e)].data);
            const iocb& request = slots[slot];
            const uint64_t at = static_cast<uint64_t>(reinterpret_cast<char*>(request.aio_buf) - data);
            const long long result = events[static_cast<size_t>(e)].res;
            if (result < 0) failed(at, static_cast<int>(-result));
            if (static_cast<uint64_t>(result) != request.aio_nbytes) short_transfer(at, result);
            free_slots.push_back(slot);
            --in_flight;
        }
    }
}

void check_swap_folder(const std::string& dir, uint64_t bytes_needed, const std::string& key) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (dir.empty()) fail(ErrorKind::kConfig, key + ": an NVMe offload needs a folder (nvme_path) for its swap files");
    if (!fs::exists(dir, ec)) fail(ErrorKind::kConfig, key + " '" + dir + "': the folder does not exist (create it first)");
    if (!fs::is_directory(dir, ec)) fail(ErrorKind::kConfig, key + " '" + dir + "': not a folder");
    const std::string probe = (fs::path(dir) / (".ftlaunch-odirect-probe-" + std::to_string(::getpid()))).string();
    const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) {
        const int error = errno;
        if (error == EINVAL)
            fail(ErrorKind::kConfig, key + " '" + dir + "': its file system does not support O_DIRECT (tmpfs does not); "
                                     "point it at a folder on a local disk");
        if (::access(dir.c_str(), W_OK) != 0)
            fail(ErrorKind::kConfig, key + " '" + dir + "': the folder is not writable by this user");
        fail(ErrorKind::kConfig, key + " '" + dir + "': cannot create a file there: " + std::strerror(error));
    }
    ::close(fd);
    ::unlink(probe.c_str());
    struct statvfs fs_info {};
    if (::statvfs(dir.c_str(), &fs_info) != 0)
        fail(ErrorKind::kConfig, key + " '" + dir + "': cannot read its free space: " + std::strerror(errno));
    const uint64_t free_bytes = static_cast<uint64_t>(fs_info.f_bavail) * fs_info.f_frsize;
    if (free_bytes < bytes_needed)
        fail(ErrorKind::kConfig, key + " '" + dir + "': the swap files need " + std::to_string(bytes_needed) + " bytes, " +
                                     "the disk has " + std::to_string(free_bytes) + " free");
}

}  // namespace ftl::io
