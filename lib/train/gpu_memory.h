// GPU memory as the seed's TorchTracemalloc reports it: torch.cuda.memory_allocated() at the
// start and end of a phase and max_memory_allocated() after a reset at the start, in MiB
// truncated toward zero, from LibTorch's CUDA caching allocator (the same counters).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ftl::train {

// The high-water mark of this rank's memory since its last reset, in bytes: on CUDA the caching
// allocator's peak allocated bytes (reset by GpuMemoryPhase), on CPU the process's peak resident
// set size (reset by CpuMemoryPhase).
int64_t device_peak_bytes(const c10::Device& device);

// Free bytes on a CUDA device (cudaMemGetInfo). Throws ftl::Error(kInternal) without CUDA.
int64_t device_free_bytes(const c10::Device& device);

class GpuMemoryPhase {
public:
    // Records the allocated bytes on `device` (CUDA) and resets its peak counter. Throws
    // ftl::Error(kInternal) in a build whose LibTorch has no CUDA.
    explicit GpuMemoryPhase(const c10::Device& device);
    // The seed's four GPU lines for `phase`:
    //   GPU Memory before entering the train : B
    //   GPU Memory consumed at the end of the train (end-begin): E
    //   GPU Peak Memory consumed during the train (max-begin): P
    //   GPU Total Peak Memory consumed during the train (max): P + B
    std::vector<std::string> report(const std::string& phase) const;

private:
    c10::DeviceIndex index_ = 0;
    int64_t begin_bytes_ = 0;
};

}  // namespace ftl::train
