#include "model/pointwise_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "util/cuda_elements.cuh"

namespace ftl::model::cuda {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops over at most this many blocks (H200: 132 SMs x 16 resident blocks of 256 threads).
constexpr int64_t kMaxBlocks = 132 * 16;

struct DeviceElements {
    template <class T>
    __device__ static float to_float(T v) { return cuda_elements::to_float<T>(v); }
    template <class T>
    __device__ static T from_float(float v) { return cuda_elements::from_float<T>(v); }
};

unsigned blocks_for(int64_t work) {
    return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (work + kThreads - 1) / kThreads)));
}

template <class T>
__global__ void __launch_bounds__(kThreads) swiglu_forward(SwigluArgs a, T* y) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < a.count;
         i += static_cast<int64_t>(gridDim.x) * kThreads)
        swiglu_forward_at<T, DeviceElements>(a, y, i);
}

template <class T>
__global__ void __launch_bounds__(kThreads) swiglu_backward(SwigluArgs a, const T* grad_y, T* grad_gate, T* grad_up) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < a.count;
         i += static_cast<int64_t>(gridDim.x) * kThreads)
        swiglu_backward_at<T, DeviceElements>(a, grad_y, grad_gate, grad_up, i);
}

template <class T>
__global__ void __launch_bounds__(kThreads) rope(RopeArgs a, const T* in, T* out, bool backward) {
    const int64_t pairs = a.pairs();
    for (int64_t p = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; p < pairs;
         p += static_cast<int64_t>(gridDim.x) * kThreads)
        rope_at<T, DeviceElements>(a, in, out, backward, p);
}

// Calls `launch` with the element type's CUDA type as its template argument.
template <class Launch>
int dispatch(ElementType type, Launch&& launch) {
    switch (type) {
        case ElementType::kFloat32: launch(float{}); break;
        case ElementType::kBFloat16: launch(__nv_bfloat16{}); break;
        case ElementType::kFloat16: launch(__half{}); break;
        default: return static_cast<int>(cudaErrorInvalidValue);
    }
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_swiglu_forward(const SwigluArgs& args, void* y, void* stream) {
    if (args.count == 0) return 0;
    return dispatch(args.type, [&](auto element) {
        using T = decltype(element);
        swiglu_forward<T><<<blocks_for(args.count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(args, static_cast<T*>(y));
    });
}

int launch_swiglu_backward(const SwigluArgs& args, const void* grad_y, void* grad_gate, void* grad_up, void* stream) {
    if (args.count == 0) return 0;
    return dispatch(args.type, [&](auto element) {
        using T = decltype(element);
        swiglu_backward<T><<<blocks_for(args.count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
            args, static_cast<const T*>(grad_y), static_cast<T*>(grad_gate), static_cast<T*>(grad_up));
    });
}

int launch_rope(const RopeArgs& args, const void* in, void* out, bool backward, void* stream) {
    if (args.pairs() == 0) return 0;
    return dispatch(args.type, [&](auto element) {
        using T = decltype(element);
        rope<T><<<blocks_for(args.pairs()), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
            args, static_cast<const T*>(in), static_cast<T*>(out), backward);
    });
}

}  // namespace ftl::model::cuda
