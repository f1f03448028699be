// Wall time per call of device work: one warm-up call, then `iterations` calls between two device
// synchronisations. For the GPU checks of bench/ (CUDA builds only).
#pragma once

#include <c10/cuda/CUDAFunctions.h>

#include <chrono>

namespace ftl::bench {

template <class F>
double seconds_per_call(F&& call, int iterations) {
    call();
    c10::cuda::device_synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) call();
    c10::cuda::device_synchronize();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
}

}  // namespace ftl::bench
