#include "train/gpu_memory.h"

#include "util/error.h"
#include "util/memory.h"

#ifdef FTL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace ftl::train {
namespace {

int64_t b2mb(int64_t bytes) { return bytes / (int64_t{1} << 20); }

#ifdef FTL_WITH_CUDA
// (current, peak) allocated bytes on the device, all pools.
std::pair<int64_t, int64_t> allocated_bytes(c10::DeviceIndex index) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    const auto& all = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    return {all.current, all.peak};
}
#else
std::pair<int64_t, int64_t> allocated_bytes(c10::DeviceIndex) {
    fail(ErrorKind::kInternal, "GPU memory report: this build's LibTorch has no CUDA");
}
#endif

}  // namespace

int64_t device_peak_bytes(const c10::Device& device) {
    if (!device.is_cuda()) return peak_resident_bytes();
    return allocated_bytes(device.index() < 0 ? 0 : device.index()).second;
}

int64_t device_free_bytes(const c10::Device& device) {
#ifdef FTL_WITH_CUDA
    const c10::cuda::CUDAGuard guard(device.index() < 0 ? 0 : device.index());
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess)
        fail(ErrorKind::kDist, "cudaMemGetInfo failed on " + device.str());
    return static_cast<int64_t>(free);
#else
    (void)device;
    fail(ErrorKind::kInternal, "GPU memory query: this build's LibTorch has no CUDA");
#endif
}

GpuMemoryPhase::GpuMemoryPhase(const c10::Device& device) : index_(device.index() < 0 ? 0 : device.index()) {
#ifdef FTL_WITH_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(index_);
#endif
    begin_bytes_ = allocated_bytes(index_).first;
}

std::vector<std::string> GpuMemoryPhase::report(const std::string& phase) const {
    const auto [end, peak] = allocated_bytes(index_);
    const int64_t begin_mb = b2mb(begin_bytes_), peaked = b2mb(std::max(peak, end) - begin_bytes_);
    return {"GPU Memory before entering the " + phase + " : " + std::to_string(begin_mb),
            "GPU Memory consumed at the end of the " + phase + " (end-begin): " + std::to_string(b2mb(end - begin_bytes_)),
            "GPU Peak Memory consumed during the " + phase + " (max-begin): " + std::to_string(peaked),
            "GPU Total Peak Memory consumed during the " + phase + " (max): " + std::to_string(peaked + begin_mb)};
}

}  // namespace ftl::train
