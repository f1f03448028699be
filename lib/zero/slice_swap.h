// ZeRO-Infinity's parameter offload to NVMe (offload_param.device nvme): the frozen weights'
// partition slices are written once to a swap file (<nvme_path>/ftlaunch-rank<r>-<pid>-params.swap,
// removed on destruction) and read back each time their part is gathered. One read can run ahead:
// prefetch() starts reading the slices the next part will need while the current part computes,
// and load() of those slices then waits only for what is left of it. Each slice's CRC-32C is
// kept when written and checked on every read.
#pragma once

#include <ATen/ATen.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "io/direct_file.h"

namespace ftl::zero {

class SliceSwap {
public:
    // `capacity`: the bytes the slices will take at most (checked against the folder's free space
    // and reserved on disk as slices arrive).
    SliceSwap(const std::string& folder, uint64_t capacity, const io::AioOptions& aio, int rank);
    ~SliceSwap();
    SliceSwap(const SliceSwap&) = delete;
    SliceSwap& operator=(const SliceSwap&) = delete;

    // Writes a contiguous CPU tensor; returns its index for load().
    size_t store(const at::Tensor& slice);
    // The slices back as CPU tensors (each owning its memory), in the order asked.
    std::vector<at::Tensor> load(const std::vector<size_t>& slices);
    // Starts reading `slices` on another thread; a load() of exactly these takes the result.
    void prefetch(const std::vector<size_t>& slices);

    std::string describe() const;  // "<file> (<bytes> bytes, <engine>)"

private:
    struct Stored {
        uint64_t offset = 0, bytes = 0;  // bytes: the tensor's; on disk padded to 4096
        at::ScalarType dtype = at::kFloat;
        int64_t numel = 0;
        uint32_t crc32c = 0;  // of the padded bytes as written
    };
    struct Pending {
        std::vector<size_t> slices;
        std::vector<at::Tensor> tensors;
        std::future<void> done;
    };
    std::vector<at::Tensor> read_now(const std::vector<size_t>& slices) const;
    void verify(size_t index, const void* data) const;

    std::unique_ptr<io::DirectFile> file_;
    std::vector<Stored> stored_;
    uint64_t used_ = 0;
    std::unique_ptr<Pending> pending_;
};

}  // namespace ftl::zero
