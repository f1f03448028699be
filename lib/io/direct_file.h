// A file read and written with O_DIRECT through the kernel's asynchronous I/O (io_submit /
// io_getevents, the interface libaio wraps; DeepSpeed's NVMe offload uses the same), for ZeRO-
// Infinity's swap files. A transfer is cut into `block_size` pieces; `thread_count` threads each
// keep up to `queue_depth` of them in flight (single_submit: one io_submit call per piece, else
// all free slots in one call). Where the kernel refuses AIO (io_setup fails: a container's seccomp
// filter, aio-max-nr), the same threads use pread/pwrite and engine() says so.
//
// O_DIRECT rules (checked, kInternal when broken): buffer addresses, offsets and lengths are
// multiples of kDirectAlignment (4096 bytes; AlignedBuffer gives such memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <string>

namespace ftl::io {

constexpr uint64_t kDirectAlignment = 4096;

// `bytes` rounded up to a multiple of kDirectAlignment.
uint64_t direct_size(uint64_t bytes);

// DeepSpeed's `aio` section.
struct AioOptions {
    uint64_t block_size = 1 << 20;  // bytes per request
    int queue_depth = 8;            // requests in flight per thread
    int thread_count = 1;
    bool single_submit = false;
};

// Host memory aligned for O_DIRECT, zero-filled.
class AlignedBuffer {
public:
    AlignedBuffer() = default;
    explicit AlignedBuffer(uint64_t bytes);  // rounded up to direct_size(bytes)
    void* data() const { return data_.get(); }
    uint64_t size() const { return size_; }

private:
    struct Free {
        void operator()(void* p) const;
    };
    std::unique_ptr<void, Free> data_;
    uint64_t size_ = 0;
};

class DirectFile {
public:
    // Creates (or truncates) `path` and reserves `bytes` on its disk (fallocate), so a disk too
    // small fails here, naming the path and the bytes, not in the middle of training. `what`
    // names the file's role in messages ("offload_optimizer swap file").
    DirectFile(const std::string& path, uint64_t bytes, const AioOptions& options, const std::string& what);
    ~DirectFile();
    DirectFile(const DirectFile&) = delete;
    DirectFile& operator=(const DirectFile&) = delete;

    // Blocking transfers of [offset, offset + bytes). Throw Error(kIo) naming the file, offset
    // and the system's reason (ENOSPC: "the disk is full").
    void write(const void* data, uint64_t bytes, uint64_t offset) const;
    void read(void* data, uint64_t bytes, uint64_t offset) const;
    // The same, run on another thread; get() waits and rethrows. The buffer must outlive it.
    std::future<void> write_async(const void* data, uint64_t bytes, uint64_t offset) const;
    std::future<void> read_async(void* data, uint64_t bytes, uint64_t offset) const;

    const std::string& path() const { return path_; }
    uint64_t size() const { return size_; }
    std::string engine() const;  // "kernel AIO" or "pread/pwrite (kernel AIO unavailable: <why>)"

private:
    void transfer(bool writing, void* data, uint64_t bytes, uint64_t offset) const;
    void transfer_pieces(bool writing, char* data, uint64_t bytes, uint64_t offset, int thread, int threads) const;

    std::string path_;
    std::string what_;
    uint64_t size_;
    AioOptions options_;
    int fd_ = -1;
    std::string aio_unavailable_;  // empty when kernel AIO works
};

// Before training: `dir` (the config key `key` named it) exists, is a writable folder on a file
// system that takes O_DIRECT, with at least `bytes_needed` free. Throws Error(kConfig) naming the
// key, the path, and (for space) the bytes needed and free.
void check_swap_folder(const std::string& dir, uint64_t bytes_needed, const std::string& key);

}  // namespace ftl::io
