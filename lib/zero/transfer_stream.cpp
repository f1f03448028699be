#include "zero/transfer_stream.h"

#ifdef FTL_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "util/error.h"

namespace ftl::zero {

#ifdef FTL_WITH_CUDA
struct TransferStream::Side {
    c10::cuda::CUDAStream stream;
};
#else
struct TransferStream::Side {};
#endif

TransferStream::TransferStream(const at::Device& device) {
    if (!device.is_cuda()) return;
#ifdef FTL_WITH_CUDA
    side_ = std::make_unique<Side>(Side{c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())});
#else
    fail(ErrorKind::kInternal, "TransferStream: a CUDA device in a build without CUDA");
#endif
}

TransferStream::~TransferStream() = default;

TransferStream::Done TransferStream::run(const std::function<void()>& enqueue, bool after_current_work) {
    if (!side_) {
        enqueue();
        return {};
    }
#ifdef FTL_WITH_CUDA
    if (after_current_work) {
        at::cuda::CUDAEvent produced;
        produced.record(c10::cuda::getCurrentCUDAStream(side_->stream.device_index()));
        produced.block(side_->stream);
    }
    c10::cuda::CUDAStreamGuard on_side(side_->stream);
    enqueue();
    auto event = std::make_shared<at::cuda::CUDAEvent>();
    event->record(side_->stream);
    return {std::static_pointer_cast<void>(event)};
#else
    return {};
#endif
}

void TransferStream::wait(const Done& done, const std::vector<at::Tensor>& tensors) {
    if (!side_ || !done.event) return;
#ifdef FTL_WITH_CUDA
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(side_->stream.device_index());
    static_cast<at::cuda::CUDAEvent*>(done.event.get())->block(current);
    for (const at::Tensor& t : tensors)
        if (t.defined() && t.is_cuda()) t.record_stream(current);
#else
    (void)tensors;
#endif
}

void TransferStream::synchronize(const Done& done) {
    if (!side_ || !done.event) return;
#ifdef FTL_WITH_CUDA
    static_cast<at::cuda::CUDAEvent*>(done.event.get())->synchronize();
#endif
}

}  // namespace ftl::zero
