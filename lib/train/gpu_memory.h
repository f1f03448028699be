// GPU memory as the seed's TorchTracemalloc reports it: torch.cuda.memory_allocated() at the
// start and end of a phase and max_memory_allocated() after a reset at the start, in MiB
// truncated toward zero, from LibTorch's CUDA caching allocator (the same counters).
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <vector>

namespace ftl::train {

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
