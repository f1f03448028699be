// Host-to-device transfers that run beside the computation (offload_param: a part's slices are
// uploaded from pinned host memory while the part before it computes, as DeepSpeed's parameter
// offload does with its own streams).
//
// On CUDA, `run` enqueues the work with a side stream current (copies, allocations, and a
// collective's wait on its input all go to that stream) and marks its end with an event; `wait`
// makes the current (compute) stream wait for that event and tells the caching allocator that
// the tensors made on the side stream are now used on the compute stream too. On the CPU both
// are plain calls: the work runs at once and waiting does nothing.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <vector>

namespace ftl::zero {

class TransferStream {
public:
    explicit TransferStream(const at::Device& device);
    ~TransferStream();
    TransferStream(const TransferStream&) = delete;
    TransferStream& operator=(const TransferStream&) = delete;

    // The end of one `run`'s work (an event on CUDA; empty on the CPU).
    struct Done {
        std::shared_ptr<void> event;
    };
    Done run(const std::function<void()>& enqueue);
    // The current stream waits for `done`; `tensors` (made inside `run`) are marked as used by it.
    void wait(const Done& done, const std::vector<at::Tensor>& tensors);

private:
    struct Side;
    std::unique_ptr<Side> side_;  // null on the CPU
};

}  // namespace ftl::zero
