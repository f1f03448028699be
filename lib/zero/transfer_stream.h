// Transfers between host and device that run beside the computation, as DeepSpeed's offload
// does with its own streams: offload_param uploads a part's slices from pinned host memory while
// the part before it computes; offload_optimizer downloads gradient chunks and uploads updated
// ones while the CPU updates the chunk between them.
//
// On CUDA, `run` enqueues the work with a side stream current (copies, allocations, and a
// collective's wait on its input all go to that stream) and marks its end with an event; `wait`
// makes the current (compute) stream wait for that event and tells the caching allocator that
// the tensors made on the side stream are now used on the compute stream too; `synchronize`
// makes the calling thread wait for it. On the CPU they are plain calls: the work runs at once
// and waiting does nothing.
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
    // `after_current_work`: the side stream first waits for the work already enqueued on the
    // current stream (for inputs the device is still producing, such as gradients).
    Done run(const std::function<void()>& enqueue, bool after_current_work = false);
    // The current stream waits for `done`; `tensors` (made inside `run`) are marked as used by it.
    void wait(const Done& done, const std::vector<at::Tensor>& tensors);
    // The calling thread waits for `done` (a download has landed in host memory).
    void synchronize(const Done& done);

private:
    struct Side;
    std::unique_ptr<Side> side_;  // null on the CPU
};

}  // namespace ftl::zero
