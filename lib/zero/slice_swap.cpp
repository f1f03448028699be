#include "zero/slice_swap.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "util/checksum.h"
#include "util/error.h"

namespace ftl::zero {

SliceSwap::SliceSwap(const std::string& folder, uint64_t capacity, const io::AioOptions& aio, int rank) {
    io::check_swap_folder(folder, capacity, "zero_optimization.offload_param.nvme_path");
    const std::string path =
        (std::filesystem::path(folder) / ("ftlaunch-rank" + std::to_string(rank) + "-" + std::to_string(::getpid()) + "-params.swap"))
            .string();
    file_ = std::make_unique<io::DirectFile>(path, capacity, aio, "offload_param swap file");
}

SliceSwap::~SliceSwap() {
    if (pending_ && pending_->done.valid()) pending_->done.wait();
    const std::string path = file_->path();
    file_.reset();
    ::unlink(path.c_str());
}

std::string SliceSwap::describe() const {
    return file_->path() + " (" + std::to_string(used_) + " bytes, " + file_->engine() + ")";
}

size_t SliceSwap::store(const at::Tensor& slice) {
    const at::Tensor host = slice.contiguous();
    if (!host.device().is_cpu()) fail(ErrorKind::kInternal, "SliceSwap::store: slices are written from host memory");
    Stored entry;
    entry.offset = used_;
    entry.bytes = host.nbytes();
    entry.dtype = host.scalar_type();
    entry.numel = host.numel();
    const uint64_t padded = io::direct_size(entry.bytes);
    if (used_ + padded > file_->size())
        fail(ErrorKind::kInternal, file_->path() + ": the parameter slices outgrow the reserved " +
                                       std::to_string(file_->size()) + " bytes");
    io::AlignedBuffer buffer(padded);
    std::memcpy(buffer.data(), host.data_ptr(), entry.bytes);
    entry.crc32c = crc32c(buffer.data(), padded);
    file_->write(buffer.data(), padded, entry.offset);
    used_ += padded;
    stored_.push_back(entry);
    return stored_.size() - 1;
}

void SliceSwap::verify(size_t index, const void* data) const {
    const Stored& entry = stored_[index];
    const uint64_t padded = io::direct_size(entry.bytes);
    const uint32_t found = crc32c(data, padded);
    if (found != entry.crc32c)
        fail(ErrorKind::kIo, file_->path() + ": the offload_param swap file changed under the run: slice " +
                                 std::to_string(index) + " (bytes " + std::to_string(entry.offset) + ".." +
                                 std::to_string(entry.offset + padded) + ") fails its CRC-32C check (written " +
                                 std::to_string(entry.crc32c) + ", read " + std::to_string(found) +
                                 "); the disk returned other bytes than were written");
}

std::vector<at::Tensor> SliceSwap::read_now(const std::vector<size_t>& slices) const {
    std::vector<at::Tensor> out;
    for (size_t index : slices) {
        const Stored& entry = stored_.at(index);
        const uint64_t padded = io::direct_size(entry.bytes);
        void* memory = nullptr;
        if (posix_memalign(&memory, io::kDirectAlignment, padded) != 0)
            fail(ErrorKind::kIo, "cannot allocate " + std::to_string(padded) + " bytes of aligned host memory");
        at::Tensor tensor = at::from_blob(memory, {entry.numel}, [](void* p) { std::free(p); },
                                          at::TensorOptions().dtype(entry.dtype));
        file_->read(memory, padded, entry.offset);
        verify(index, memory);
        out.push_back(std::move(tensor));
    }
    return out;
}

std::vector<at::Tensor> SliceSwap::load(const std::vector<size_t>& slices) {
    if (pending_ && pending_->slices == slices) {
        std::unique_ptr<Pending> taken = std::move(pending_);
        taken->done.get();  // rethrows a failed read
        return std::move(taken->tensors);
    }
    return read_now(slices);
}

void SliceSwap::prefetch(const std::vector<size_t>& slices) {
    if (pending_ && pending_->slices == slices) return;
    if (pending_ && pending_->done.valid()) pending_->done.wait();  // a wrong guess: let it finish
    auto next = std::make_unique<Pending>();
    next->slices = slices;
    Pending* raw = next.get();
    next->done = std::async(std::launch::async, [this, raw] { raw->tensors = read_now(raw->slices); });
    pending_ = std::move(next);
}

}  // namespace ftl::zero
